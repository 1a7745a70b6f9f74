"""The SSRF guard and the per-run egress proxy: every request the browser makes is checked here."""
