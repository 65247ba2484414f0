from fdsl.cli.main import main

raise SystemExit(main())
