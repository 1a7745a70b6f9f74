"""What a scrape returns: sanitised text, de-duplicated lists, dates, the local analysis."""
