from dualenc.cli import run

run()
