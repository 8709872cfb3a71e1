import io
import subprocess
import sys

import pytest
from test_ranker import overlap_model, write_run

from dualenc.commands.chat import converse, display, reply_lines
from dualenc.index import BankHit, ResponseBank
from dualenc.ranker import Ranker

BANK = ["try alsamixer to unmute the sound __eou__", "reinstall grub from a live cd __eou__",
        "hello , welcome to ubuntu __eou__"]
ALSAMIXER, GRUB, HELLO = (display(text) for text in BANK)


@pytest.fixture(scope="module")
def chat_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("chat")
    ranker = Ranker.load(write_run(root / "run", overlap_model()))
    ResponseBank.build(ranker, BANK, kind="exact", progress=False).save(root / "bank")
    return ranker, root / "run", root / "bank"


def test_chat_over_standard_input_keeps_the_dialog_until_reset(chat_files):
    ranker, run, index = chat_files
    typed = ["hello , my sound is broken , try alsamixer", "grub grub", "/reset", "/what", "",
             "reinstall grub , hello", "/quit", "my sound"]
    out = subprocess.run(
        [sys.executable, "-m", "dualenc", "chat", "--run", str(run), "--index", str(index),
         "--top", "2"],
        input="\n".join(typed) + "\n", capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr

    # The same dialogs in this process: the second turn still sees the first reply, whose
    # alsamixer, try and sound outweigh "grub"; after /reset only "reinstall grub , hello".
    bank = ResponseBank.load(index, ranker)
    first = bank.respond(ranker, [typed[0]], 2)
    second = bank.respond(ranker, [typed[0], first[0].text, typed[1]], 2)
    third = bank.respond(ranker, [typed[5]], 2)
    assert [display(h.text) for h in first + second + third] == [
        ALSAMIXER, HELLO, ALSAMIXER, GRUB, GRUB, HELLO]
    expected = [
        *reply_lines(first, 2), *reply_lines(second, 2),
        "(new dialog)",
        "(unknown command /what: /reset starts a new dialog, /quit ends)",
        *reply_lines(third, 2),
    ]
    assert out.stdout.splitlines() == expected
    assert expected[0] == f"bot: {ALSAMIXER}"
    assert expected[1] == f"  1. {first[0].logit:8.3f}  {first[0].probability:.3f}  {ALSAMIXER}"
    assert first[0].logit == pytest.approx(3 * 0.580, abs=3e-3)  # sound, try, alsamixer


def test_converse_passes_user_turns_and_replies_and_ends_at_end_of_input():
    seen = []

    def respond(turns, k):
        seen.append(list(turns))
        return [BankHit(f"reply {len(seen)} __eou__", 0, 1.0, 0.73)][:k]

    out = io.StringIO()
    replies = converse(respond, io.StringIO("a\nb\n/reset\nc\n"), out, top=1)
    assert replies == 3
    assert seen == [["a"], ["a", "reply 1 __eou__", "b"], ["c"]]
    assert out.getvalue().splitlines() == ["bot: reply 1", "bot: reply 2", "(new dialog)",
                                           "bot: reply 3"]


def test_display_drops_the_corpus_markers():
    assert display("hi __eou__ try this __eou__ __eot__ ") == "hi try this"
