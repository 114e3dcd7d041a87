"""The application's mailers, in jobkit's conventions (see docs/mailers.md)."""
