"""Local tooling: the embedded AWS stand-in, the SES event simulator and the demo."""
