"""Mail previews: `jobkit mail preview UserMailer.welcome`, or /mail/previews in `jobkit web`."""
