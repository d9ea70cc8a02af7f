//! The token LM: a Llama-shaped transformer over a grid of token streams.
