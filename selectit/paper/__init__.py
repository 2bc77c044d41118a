"""The paper's tables and figures: which runs they need (plan), tables, figures."""
