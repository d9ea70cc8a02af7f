//! Text streams: the model directory's `tokenizer.json` (Hugging Face `tokenizers` format) maps
//! text to tokenizer ids, and a stream's `text_offset` places those ids in its vocabulary.

use std::path::{Path, PathBuf};

use speechinfer_core::{Error, Result};
use tokenizers::Tokenizer;

use crate::model::SpeechLm;

/// The file a model directory may hold next to `config.json`.
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// A text tokenizer read from a `tokenizer.json`. Encoding adds no special tokens and never pads
/// or truncates (settings in the file to do so are switched off).
pub struct TextTokenizer {
    inner: Tokenizer,
    /// One past the largest id the tokenizer knows (added tokens included).
    num_ids: u32,
    path: PathBuf,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("path", &self.path)
            .field("num_ids", &self.num_ids)
            .finish()
    }
}

impl TextTokenizer {
    /// `dir/tokenizer.json` if the directory holds one; a file that does not parse is a
    /// checkpoint error naming it.
    pub fn load_dir(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join(TOKENIZER_FILE);
        if !path.exists() {
            return Ok(None);
        }
        Self::from_file(&path).map(Some)
    }

    /// Read a `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let mut inner = Tokenizer::from_bytes(&bytes).map_err(|e| {
            Error::checkpoint(format!("{} is not a valid tokenizer: {e}", path.display()))
        })?;
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|e| Error::internal(format!("cannot switch off truncation: {e}")))?;
        let largest = inner.get_vocab(true).into_values().max();
        let num_ids = match largest {
            None => 0,
            Some(id) => id.checked_add(1).ok_or_else(|| {
                Error::checkpoint(format!("{} holds token id {id}", path.display()))
            })?,
        };
        Ok(Self {
            inner,
            num_ids,
            path: path.to_path_buf(),
        })
    }

    /// The file this tokenizer was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// One past the largest tokenizer id: ids `0 .. num_ids` may be decoded.
    pub fn num_ids(&self) -> u32 {
        self.num_ids
    }

    /// Tokenizer ids of `text` (no special tokens added).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .inner
            .encode(text, false)
            .map_err(|e| Error::input(format!("cannot tokenize the text: {e}")))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// The text of tokenizer ids (the tokenizer's special tokens are left out, as in Python's
    /// `Tokenizer.decode`). Every id must be one the tokenizer knows.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        if let Some(&id) = ids.iter().find(|&&id| id >= self.num_ids) {
            return Err(Error::input(format!(
                "token id {id} is outside the tokenizer's ids [0, {})",
                self.num_ids
            )));
        }
        self.inner
            .decode(ids, true)
            .map_err(|e| Error::input(format!("cannot decode token ids: {e}")))
    }
}

impl SpeechLm {
    fn text_stream(&self, stream: usize) -> Result<(&TextTokenizer, &crate::StreamConfig)> {
        let tokenizer = self
            .tokenizer()
            .ok_or_else(|| Error::input("this model has no tokenizer.json"))?;
        let k_n = self.num_streams();
        let config = self.config().streams.get(stream).ok_or_else(|| {
            Error::input(format!(
                "stream {stream} does not exist: the model has {k_n} streams"
            ))
        })?;
        Ok((tokenizer, config))
    }

    /// Token ids of `text` in stream `stream`'s vocabulary: tokenizer ids + its `text_offset`.
    /// Fails if one does not fit the stream's vocabulary.
    pub fn tokenize(&self, text: &str, stream: usize) -> Result<Vec<i64>> {
        let (tokenizer, config) = self.text_stream(stream)?;
        let offset = i64::from(config.text_offset);
        let vocab = config.vocab_size as i64;
        tokenizer
            .encode(text)?
            .into_iter()
            .map(|id| {
                let token = i64::from(id) + offset;
                if token < vocab {
                    return Ok(token);
                }
                Err(Error::input(format!(
                    "text token {token} (tokenizer id {id} + text_offset {offset}) does not fit \
                     stream {stream} ('{}') vocabulary [0, {vocab})",
                    config.name
                )))
            })
            .collect()
    }

    /// The text of stream `stream`'s tokens: ids in its text range (`text_offset ..
    /// text_offset + tokenizer ids`, inside the vocabulary) are decoded, every other id (pad,
    /// audio units, markers, specials, `-1`) is skipped.
    pub fn detokenize(&self, ids: &[i64], stream: usize) -> Result<String> {
        let (tokenizer, config) = self.text_stream(stream)?;
        let offset = i64::from(config.text_offset);
        let end = (offset + i64::from(tokenizer.num_ids())).min(config.vocab_size as i64);
        let text_ids: Vec<u32> = ids
            .iter()
            .filter(|&&id| (offset..end).contains(&id))
            .map(|&id| (id - offset) as u32)
            .collect();
        tokenizer.decode(&text_ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A WordLevel tokenizer splitting on whitespace, with `[UNK]` = 0.
    const WORD_LEVEL: &str = r#"{
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null,
        "decoder": null,
        "model": {"type": "WordLevel", "unk_token": "[UNK]",
                  "vocab": {"[UNK]": 0, "hello": 1, "speech": 2, "world": 3}}
    }"#;

    fn write(dir: &Path, text: &str) -> PathBuf {
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.join(TOKENIZER_FILE);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn temp_dir(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("speechinfer-text-{name}-{}", std::process::id()))
    }

    #[test]
    fn encodes_and_decodes_word_level() {
        let dir = temp_dir("ok");
        write(&dir, WORD_LEVEL);
        let tok = TextTokenizer::load_dir(&dir).unwrap().unwrap();
        assert_eq!(tok.num_ids(), 4);
        assert_eq!(tok.encode("hello world speech").unwrap(), vec![1, 3, 2]);
        assert_eq!(tok.encode("hello moon").unwrap(), vec![1, 0]);
        assert_eq!(tok.decode(&[1, 3]).unwrap(), "hello world");
        let err = tok.decode(&[1, 4]).unwrap_err();
        assert!(matches!(err, Error::Input(_)), "{err}");
        assert!(err.to_string().contains("token id 4"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_file_is_none_and_corrupt_file_a_checkpoint_error() {
        let dir = temp_dir("bad");
        std::fs::create_dir_all(&dir).unwrap();
        assert!(TextTokenizer::load_dir(&dir).unwrap().is_none());
        write(&dir, "{\"model\": 3");
        let err = TextTokenizer::load_dir(&dir).unwrap_err();
        assert!(matches!(err, Error::Checkpoint(_)), "{err}");
        assert!(err.to_string().contains(TOKENIZER_FILE), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
