"""One module per lesson's exercises; each declares its exercises and is imported automatically."""
