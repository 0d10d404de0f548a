"""Arena: two anonymous policy versions answer one prompt, the labeler votes, then sees names."""
