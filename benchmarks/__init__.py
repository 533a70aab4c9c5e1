"""One benchmark per measured claim."""
