//! Python objects → JSON values, walked directly for the plain types.
//!
//! A model call's payload carries the whole conversation so far, so this walk
//! runs over every message of it on every model call. Plain `dict`, `list`,
//! `tuple`, `str`, `int`, `float`, `bool` and `None` are read by type, without
//! the general machinery; any other object (a `dict` subclass, a mapping, a
//! dataclass, an integer too large for 64 bits) and anything nested deeper
//! than [`PLAIN_DEPTH`] goes to pythonize, so what it accepts, and how it
//! fails, stays what it always was.

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use serde_json::{Map, Number, Value};

/// How deep the direct walk goes before it hands the rest to pythonize.
const PLAIN_DEPTH: usize = 256;

/// `obj` as a JSON value.
pub fn json_value(obj: &Bound<'_, PyAny>) -> Result<Value, pythonize::PythonizeError> {
    walk(obj, 0)
}

fn walk(obj: &Bound<'_, PyAny>, depth: usize) -> Result<Value, pythonize::PythonizeError> {
    if depth < PLAIN_DEPTH
        && let Some(value) = plain(obj, depth)?
    {
        return Ok(value);
    }
    pythonize::depythonize::<Value>(obj)
}

/// The value of a plain object, `None` for any other.
fn plain(obj: &Bound<'_, PyAny>, depth: usize) -> Result<Option<Value>, pythonize::PythonizeError> {
    if obj.is_none() {
        return Ok(Some(Value::Null));
    }
    if let Ok(text) = obj.cast_exact::<PyString>() {
        // A string with lone surrogates is not UTF-8: pythonize says so.
        return Ok(text.to_str().ok().map(|s| Value::String(s.to_owned())));
    }
    if let Ok(dict) = obj.cast_exact::<PyDict>() {
        let mut map = Map::new();
        for (key, item) in dict.iter() {
            let Ok(key) = key.cast_exact::<PyString>() else {
                return Ok(None);
            };
            let Ok(key) = key.to_str() else {
                return Ok(None);
            };
            map.insert(key.to_owned(), walk(&item, depth + 1)?);
        }
        return Ok(Some(Value::Object(map)));
    }
    if let Ok(list) = obj.cast_exact::<PyList>() {
        let items = list.iter().map(|item| walk(&item, depth + 1));
        return items
            .collect::<Result<_, _>>()
            .map(|v| Some(Value::Array(v)));
    }
    if let Ok(tuple) = obj.cast_exact::<PyTuple>() {
        let items = tuple.iter().map(|item| walk(&item, depth + 1));
        return items
            .collect::<Result<_, _>>()
            .map(|v| Some(Value::Array(v)));
    }
    // `bool` before `int`: it is one.
    if let Ok(flag) = obj.cast_exact::<PyBool>() {
        return Ok(Some(Value::Bool(flag.is_true())));
    }
    if let Ok(int) = obj.cast_exact::<PyInt>() {
        if let Ok(small) = int.extract::<i64>() {
            return Ok(Some(Value::from(small)));
        }
        return Ok(int.extract::<u64>().ok().map(Value::from));
    }
    if let Ok(float) = obj.cast_exact::<PyFloat>() {
        // NaN and the infinities are not JSON numbers; pythonize decides.
        return Ok(Number::from_f64(float.value()).map(Value::Number));
    }
    Ok(None)
}
