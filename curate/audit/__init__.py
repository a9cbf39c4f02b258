"""The audit surface: facts, report, charts, dataset cards, validation, the what-if sandbox, explain."""
