from dualenc.cli import main

raise SystemExit(main())
