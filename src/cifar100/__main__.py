from cifar100.cli import main

raise SystemExit(main())
