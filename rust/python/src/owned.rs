//! A JSON value handed to Python by value: what the core hands over and no
//! longer needs (a model call's reassembled completion, a run's result).
//!
//! Converting by reference holds the whole value twice at its peak: the Rust
//! text and the Python `str` made from it. A completion's content can be most
//! of its size (megabytes, for a long answer), so a long string is handed over
//! a piece at a time instead: pieces are cut from its end, each shrinking the
//! Rust text as it becomes a Python `str`, then joined front to back, each
//! piece freed once it is appended (CPython grows a `str` nobody else holds in
//! place). That holds the text about once, plus a piece, only where the
//! allocator gives big blocks back as they are freed (it maps them on their
//! own, as `stepwell serve` has glibc do); elsewhere freed pieces stay with
//! the process and the pieces cost a third copy, so they are used only once
//! [`hand_long_texts_over_in_pieces`] says so.

use std::sync::atomic::{AtomicBool, Ordering};

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};
use serde_json::Value;

use crate::convert;

/// Strings longer than this (in bytes) are handed over in pieces of about
/// this size.
const PIECE: usize = 1 << 20;

static IN_PIECES: AtomicBool = AtomicBool::new(false);

/// Hands long strings to Python in pieces (`on`), or whole: call it with
/// `True` once the C allocator maps big blocks on their own and unmaps them
/// when freed.
#[pyfunction]
pub fn hand_long_texts_over_in_pieces(on: bool) {
    IN_PIECES.store(on, Ordering::Relaxed);
}

/// JSON value → Python object, consuming the value (see the module's doc).
pub fn into_py(py: Python<'_>, value: Value) -> PyResult<Bound<'_, PyAny>> {
    match value {
        Value::String(text) => long_str(py, text),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(into_py(py, item)?)?;
            }
            Ok(list.into_any())
        }
        Value::Object(fields) => {
            let dict = PyDict::new(py);
            for (key, item) in fields {
                dict.set_item(key, into_py(py, item)?)?;
            }
            Ok(dict.into_any())
        }
        // Null, booleans and numbers, exactly as the by-reference path has them.
        scalar => convert::to_py(py, &scalar),
    }
}

/// `text` as a Python `str`; in pieces, when it is longer than [`PIECE`] and
/// they are on, so it is never held whole in both forms at once.
fn long_str(py: Python<'_>, mut text: String) -> PyResult<Bound<'_, PyAny>> {
    if text.len() <= PIECE || !IN_PIECES.load(Ordering::Relaxed) {
        return Ok(PyString::new(py, &text).into_any());
    }
    let mut tail = Vec::new();
    while text.len() > PIECE {
        let mut cut = text.len() - PIECE;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        tail.push(PyString::new(py, text.get(cut..).unwrap_or_default()));
        text.truncate(cut);
        text.shrink_to_fit();
    }
    let mut joined = PyString::new(py, &text).into_any();
    drop(text);
    for piece in tail.into_iter().rev() {
        joined = append(py, joined, &piece)?;
    }
    Ok(joined)
}

/// `left + right`, in place when `left` is held only here.
fn append<'py>(
    py: Python<'py>,
    left: Bound<'py, PyAny>,
    right: &Bound<'py, PyString>,
) -> PyResult<Bound<'py, PyAny>> {
    let mut joined = left.into_ptr();
    // SAFETY: `joined` is an owned reference to a `str` and `right` a live
    // `str`; `PyUnicode_Append` takes the reference in `joined` and leaves an
    // owned one to the result there, or null with an exception set.
    unsafe {
        pyo3::ffi::PyUnicode_Append(&mut joined, right.as_ptr());
        Bound::from_owned_ptr_or_err(py, joined)
    }
}
