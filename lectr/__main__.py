from lectr.cli import main

raise SystemExit(main())
