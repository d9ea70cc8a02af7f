//! Loading `model.safetensors` into f32 candle tensors with the checks a served checkpoint
//! needs: every expected tensor present with the expected shape, finite values, and nothing left
//! over that the config did not account for.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use safetensors::tensor::{Dtype, SafeTensors};

use crate::{Error, Result};

/// The tensors of one safetensors file, handed out by name exactly once each.
pub struct Checkpoint {
    path: PathBuf,
    tensors: BTreeMap<String, Tensor>,
    taken: BTreeSet<String>,
    /// Set for [`Checkpoint::random`]: every `take` draws N(0, std²) values of the asked shape.
    random: Option<(f32, Device)>,
}

impl Checkpoint {
    /// Read and validate a safetensors file; every tensor is widened to f32 on `device`.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let file = SafeTensors::deserialize(&bytes).map_err(|e| {
            Error::checkpoint(format!(
                "{} is not a valid safetensors file (truncated or corrupt?): {e}",
                path.display()
            ))
        })?;
        let mut tensors = BTreeMap::new();
        for (name, view) in file.tensors() {
            let values = to_f32(view.dtype(), view.data()).map_err(|msg| {
                Error::checkpoint(format!("tensor '{name}' in {}: {msg}", path.display()))
            })?;
            if let Some(bad) = values.iter().position(|v| !v.is_finite()) {
                return Err(Error::checkpoint(format!(
                    "tensor '{name}' in {} holds a non-finite value ({}) at flat index {bad}",
                    path.display(),
                    values[bad]
                )));
            }
            let tensor = Tensor::from_vec(values, view.shape(), device)?;
            tensors.insert(name, tensor);
        }
        Ok(Self {
            path: path.to_path_buf(),
            tensors,
            taken: BTreeSet::new(),
            random: None,
        })
    }

    /// `dir/model.safetensors`, with a clear error when the model directory lacks it.
    pub fn load_model_dir(dir: &Path, device: &Device) -> Result<Self> {
        let weights = dir.join(crate::config::WEIGHTS_FILE);
        if !weights.is_file() {
            return Err(Error::checkpoint(format!(
                "{} is missing from the model directory",
                weights.display()
            )));
        }
        Self::load(&weights, device)
    }

    /// Merges the tensors of several safetensors files (a sharded checkpoint); a name present in
    /// two files is an error.
    pub fn load_many(paths: &[PathBuf], device: &Device) -> Result<Self> {
        let mut merged: Option<Checkpoint> = None;
        for path in paths {
            let part = Self::load(path, device)?;
            merged = Some(match merged {
                None => part,
                Some(mut all) => {
                    for (name, tensor) in part.tensors {
                        if all.tensors.insert(name.clone(), tensor).is_some() {
                            return Err(Error::checkpoint(format!(
                                "tensor '{name}' appears in more than one shard ({})",
                                path.display()
                            )));
                        }
                    }
                    all
                }
            });
        }
        merged.ok_or_else(|| Error::checkpoint("no safetensors files to load"))
    }

    /// Renames every tensor with `rename` (names it returns `None` for are kept, so that
    /// [`Checkpoint::finish`] reports them); two names mapping to one is an error.
    pub fn rename(mut self, rename: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let mut renamed = BTreeMap::new();
        for (name, tensor) in std::mem::take(&mut self.tensors) {
            let new = rename(&name).unwrap_or_else(|| name.clone());
            if renamed.insert(new.clone(), tensor).is_some() {
                return Err(Error::checkpoint(format!(
                    "two tensors of {} map to '{new}' (one is '{name}')",
                    self.path.display()
                )));
            }
        }
        self.tensors = renamed;
        Ok(self)
    }

    /// A source of random weights with whatever shapes the model asks for (benches, tests).
    pub fn random(std: f32, device: &Device) -> Self {
        Self {
            path: PathBuf::from("<random>"),
            tensors: BTreeMap::new(),
            taken: BTreeSet::new(),
            random: Some((std, device.clone())),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// The tensor `name`, which must have exactly `shape`.
    pub fn take(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        if let Some((std, device)) = &self.random {
            return Ok(Tensor::randn(0f32, *std, shape, device)?);
        }
        let tensor = self.take_any(name)?;
        if tensor.dims() != shape {
            return Err(Error::checkpoint(format!(
                "tensor '{name}' in {} has shape {:?}, the config expects {:?}",
                self.path.display(),
                tensor.dims(),
                shape
            )));
        }
        Ok(tensor)
    }

    /// The tensor `name` with whatever shape it has.
    pub fn take_any(&mut self, name: &str) -> Result<Tensor> {
        let tensor = self.tensors.get(name).cloned().ok_or_else(|| {
            Error::checkpoint(format!(
                "tensor '{name}' is missing from {}",
                self.path.display()
            ))
        })?;
        self.taken.insert(name.to_string());
        Ok(tensor)
    }

    /// Fail if the file holds tensors nobody asked for: the checkpoint and config disagree.
    pub fn finish(self) -> Result<()> {
        let unused: Vec<&String> = self
            .tensors
            .keys()
            .filter(|n| !self.taken.contains(*n))
            .collect();
        if unused.is_empty() {
            return Ok(());
        }
        let shown: Vec<&str> = unused.iter().take(5).map(|s| s.as_str()).collect();
        Err(Error::checkpoint(format!(
            "{} holds {} tensor(s) the config does not describe (e.g. {}); config and weights do not match",
            self.path.display(),
            unused.len(),
            shown.join(", ")
        )))
    }
}

fn to_f32(dtype: Dtype, data: &[u8]) -> std::result::Result<Vec<f32>, String> {
    fn chunks<const N: usize>(data: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
        data.chunks_exact(N).map(|c| {
            let mut a = [0u8; N];
            a.copy_from_slice(c);
            a
        })
    }
    Ok(match dtype {
        Dtype::F32 => chunks::<4>(data).map(f32::from_le_bytes).collect(),
        Dtype::F16 => chunks::<2>(data)
            .map(|b| half::f16::from_le_bytes(b).to_f32())
            .collect(),
        Dtype::BF16 => chunks::<2>(data)
            .map(|b| half::bf16::from_le_bytes(b).to_f32())
            .collect(),
        Dtype::F64 => chunks::<8>(data)
            .map(|b| f64::from_le_bytes(b) as f32)
            .collect(),
        other => {
            return Err(format!(
                "unsupported dtype {other:?} (expected a float type)"
            ))
        }
    })
}
