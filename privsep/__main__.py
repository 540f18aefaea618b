from privsep.listener.main import main

raise SystemExit(main())
