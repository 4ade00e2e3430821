from cifar100.cli.main import main

raise SystemExit(main())
