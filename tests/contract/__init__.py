"""Contract suites: one per engine interface, run against every backend (STYLE rule 19)."""
