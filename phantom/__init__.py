"""The embedded default data: deterministic phantom scans written in real dataset layouts."""
