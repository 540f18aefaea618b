from privsep.sshd import main

raise SystemExit(main())
