from clustersim.cli import main

raise SystemExit(main())
