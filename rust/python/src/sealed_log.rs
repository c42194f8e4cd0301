//! `stepwell_core::sealed_log` for the stores: a finished response's event
//! log kept compactly and rendered again byte for byte.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use stepwell_core::sealed_log;

/// `frames` (numbered from `first_sequence`) as a sealed log, or `None` when
/// they cannot be sealed (they are then kept as they are).
#[pyfunction]
fn seal_log(frames: &str, first_sequence: u64) -> Option<String> {
    sealed_log::seal(frames, first_sequence)
}

/// The frames of a sealed log numbered above `after`, at most `limit`.
#[pyfunction]
#[pyo3(signature = (sealed, first_sequence, after, limit=None))]
fn unseal_log(
    sealed: &str,
    first_sequence: u64,
    after: i64,
    limit: Option<usize>,
) -> PyResult<Vec<String>> {
    sealed_log::unseal(sealed, first_sequence, after, limit.unwrap_or(usize::MAX))
        .map_err(|error| PyValueError::new_err(error.to_string()))
}

/// How many frames a sealed log holds.
#[pyfunction]
fn sealed_count(sealed: &str) -> usize {
    sealed_log::sealed_count(sealed)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(seal_log, m)?)?;
    m.add_function(wrap_pyfunction!(unseal_log, m)?)?;
    m.add_function(wrap_pyfunction!(sealed_count, m)?)?;
    m.add("SEALED_LOG", sealed_log::SEALED.to_string())?;
    Ok(())
}
