//! A JSON value handed to Python by value: what the core hands over and no
//! longer needs (a model call's reassembled completion, a run's result).
//!
//! Converting by reference holds the whole value twice at its peak: the Rust
//! text and the Python `str` made from it. A completion's content can be most
//! of its size (megabytes, for a long answer), so a long string is handed over
//! a piece at a time instead: pieces are cut from its end, each shrinking the
//! Rust text as it becomes a Python `str`, then joined front to back, each
//! piece freed once it is appended (CPython grows a `str` nobody else holds in
//! place). That holds the text about once, plus a piece, where freed memory
//! goes back to the system: the Rust text is in a block mapped on its own
//! (see `big_blocks`), and glibc is asked to give back what the pieces
//! leave in its heap. Elsewhere freed pieces would stay with the process and
//! cost a third copy, so there the text is handed over whole unless
//! [`hand_long_texts_over_in_pieces`] says otherwise.

use std::sync::atomic::{AtomicBool, Ordering};

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};
use serde_json::Value;

use crate::convert;

/// Strings longer than this (in bytes) are handed over in pieces of about
/// this size.
const PIECE: usize = 1 << 20;

static IN_PIECES: AtomicBool = AtomicBool::new(CAN_GIVE_BACK);

/// Hands long strings to Python in pieces (`on`), or whole. Pieces are the
/// default where freed memory can be given back (Linux with glibc).
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
pub fn long_str(py: Python<'_>, mut text: String) -> PyResult<Bound<'_, PyAny>> {
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
        give_back();
    }
    let mut joined = PyString::new(py, &text).into_any();
    drop(text);
    for piece in tail.into_iter().rev() {
        joined = append(py, joined, &piece)?;
        drop(piece);
        give_back();
    }
    Ok(joined)
}

/// Whether [`give_back`] returns freed memory to the system here.
const CAN_GIVE_BACK: bool = cfg!(all(target_os = "linux", target_env = "gnu"));

/// Returns the C allocator's free memory to the system, where it can be
/// asked to: glibc otherwise keeps a block freed inside its heap, and each
/// piece handed over would stay with the process, a third copy of the text.
/// It walks the allocator's free lists (a fraction of a millisecond), which a
/// text long enough to be handed over in pieces is worth.
fn give_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        unsafe extern "C" {
            fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        // SAFETY: glibc's `malloc_trim` takes no pointer and only releases
        // memory its allocator holds free; it is safe to call at any time.
        unsafe {
            malloc_trim(0);
        }
    }
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
