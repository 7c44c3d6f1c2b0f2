"""``screen monitor``: recent nights against the tuning set's reference (score drift, flag rate,
failures, unseen devices and body parts) and, given the radiologists' reads, realised
sensitivity and specificity. ``stats`` holds the tests, ``window`` gathers the nights from the
ledger, ``checks`` decides the alarms, ``reads`` the realised performance, ``html`` the page."""
