"""Label spaces and the word vectors that embed label names."""
