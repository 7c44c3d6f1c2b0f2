"""The night: scan, plan, decode, members, fuse, write, ledger."""
