from oneroot.cli.main import main

raise SystemExit(main())
