//! numpy ↔ engine conversions with the dtype and shape checks that give callers clear errors.

use candle_core::{Device, Tensor};
use numpy::{
    PyArrayDescrMethods, PyArrayDyn, PyArrayMethods, PyUntypedArray, PyUntypedArrayMethods,
};
use pyo3::prelude::*;

use crate::errors::input_error;

/// A host-side array: flat values in row-major order and their shape.
pub struct HostArray<T> {
    pub values: Vec<T>,
    pub shape: Vec<usize>,
}

impl<T: candle_core::WithDType> HostArray<T> {
    pub fn to_tensor(&self, device: &Device) -> speechinfer_core::Result<Tensor> {
        Ok(Tensor::from_slice(
            &self.values,
            self.shape.as_slice(),
            device,
        )?)
    }
}

fn as_ndarray<'a, 'py>(
    py: Python<'py>,
    obj: &'a Bound<'py, PyAny>,
    what: &str,
) -> PyResult<&'a Bound<'py, PyUntypedArray>> {
    obj.cast::<PyUntypedArray>().map_err(|_| {
        let type_name = obj
            .get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_else(|_| "?".into());
        input_error(py, format!("{what} must be a numpy array, got {type_name}"))
    })
}

fn dtype_name(array: &Bound<'_, PyUntypedArray>) -> String {
    array
        .dtype()
        .str()
        .map(|s| s.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// A float32 array, whatever its strides; other dtypes are refused (no silent precision change).
pub fn float32_array(
    py: Python<'_>,
    obj: &Bound<'_, PyAny>,
    what: &str,
) -> PyResult<HostArray<f32>> {
    let untyped = as_ndarray(py, obj, what)?;
    let array = untyped.cast::<PyArrayDyn<f32>>().map_err(|_| {
        input_error(
            py,
            format!(
                "{what} must be float32, got {} (convert with .astype(numpy.float32))",
                dtype_name(untyped)
            ),
        )
    })?;
    let readonly = array.readonly();
    let view = readonly.as_array();
    let values: Vec<f32> = view.iter().copied().collect();
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(input_error(
            py,
            format!(
                "{what} holds a non-finite value ({}) at flat index {i}",
                values[i]
            ),
        ));
    }
    Ok(HostArray {
        values,
        shape: view.shape().to_vec(),
    })
}

/// An integer array of any integer dtype, widened to i64; floats and bools are refused.
pub fn int_array(py: Python<'_>, obj: &Bound<'_, PyAny>, what: &str) -> PyResult<HostArray<i64>> {
    let untyped = as_ndarray(py, obj, what)?;
    let kind = untyped.dtype().kind();
    if kind != b'i' && kind != b'u' {
        return Err(input_error(
            py,
            format!(
                "{what} must be an integer array, got {}",
                dtype_name(untyped)
            ),
        ));
    }
    let widened = untyped.call_method1("astype", ("int64",))?;
    let array = widened
        .cast::<PyArrayDyn<i64>>()
        .map_err(|_| input_error(py, format!("{what}: cannot view as int64")))?;
    let readonly = array.readonly();
    let view = readonly.as_array();
    if kind == b'u' && untyped.dtype().itemsize() == 8 {
        let too_big = untyped
            .call_method0("max")
            .and_then(|m| m.extract::<u64>())
            .map(|m| m > i64::MAX as u64)
            .unwrap_or(false);
        if too_big {
            return Err(input_error(py, format!("{what} holds values beyond int64")));
        }
    }
    Ok(HostArray {
        values: view.iter().copied().collect(),
        shape: view.shape().to_vec(),
    })
}

/// Row-major values and a shape → a numpy array.
pub fn to_numpy<'py, T: numpy::Element>(
    py: Python<'py>,
    values: Vec<T>,
    shape: &[usize],
) -> PyResult<Bound<'py, PyArrayDyn<T>>> {
    numpy::PyArray1::from_vec(py, values).reshape(shape)
}

/// A tensor's values and shape, read back on the host.
pub fn tensor_to_host<T: candle_core::WithDType>(
    tensor: &Tensor,
) -> speechinfer_core::Result<HostArray<T>> {
    Ok(HostArray {
        values: tensor.flatten_all()?.to_vec1::<T>()?,
        shape: tensor.dims().to_vec(),
    })
}
