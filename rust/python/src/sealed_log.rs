//! `stepwell_core::sealed_log` for the stores: a finished response's event
//! log kept compactly and rendered again byte for byte.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use stepwell_core::sealed_log;

/// Seals a log a batch at a time: `push` each batch in order, then `finish`
/// for the sealed log (`None` when it cannot be sealed: it is then kept as
/// it is).
#[pyclass(name = "LogSealer", module = "stepwell._core")]
struct PyLogSealer {
    inner: Option<sealed_log::Sealer>,
}

#[pymethods]
impl PyLogSealer {
    #[new]
    fn new(first_sequence: u64) -> Self {
        PyLogSealer {
            inner: Some(sealed_log::Sealer::new(first_sequence)),
        }
    }

    /// Adds the next batch of frames; returns how many it held (0 once the
    /// log holds what it cannot seal: it is then not counted).
    fn push(&mut self, frames: &str) -> PyResult<usize> {
        Ok(self
            .inner
            .as_mut()
            .ok_or_else(|| PyValueError::new_err("this LogSealer is finished"))?
            .push(frames))
    }

    /// Adds the next piece of the log as a log sealed on its own, its first
    /// frame numbered `first_sequence`, without rendering it again; returns
    /// how many frames it held, as `push` does (`ValueError` for a sealed
    /// log that does not read back).
    fn push_sealed(&mut self, sealed: &str, first_sequence: u64) -> PyResult<usize> {
        self.inner
            .as_mut()
            .ok_or_else(|| PyValueError::new_err("this LogSealer is finished"))?
            .push_sealed(sealed, first_sequence)
            .map_err(|error| PyValueError::new_err(error.to_string()))
    }

    /// The sealed log, or `None` when a batch held a reserved character.
    fn finish(&mut self) -> PyResult<Option<String>> {
        let sealer = self
            .inner
            .take()
            .ok_or_else(|| PyValueError::new_err("this LogSealer is finished"))?;
        Ok(sealer.finish())
    }
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

/// How many frames a batch of frames holds (its blank lines), counted at
/// the speed of a byte search: a batch of a fast stream is large.
#[pyfunction]
fn count_frames(frames: &str) -> usize {
    sealed_log::count_frames(frames)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(count_frames, m)?)?;
    m.add_class::<PyLogSealer>()?;
    m.add_function(wrap_pyfunction!(unseal_log, m)?)?;
    m.add_function(wrap_pyfunction!(sealed_count, m)?)?;
    m.add("SEALED_LOG", sealed_log::SEALED.to_string())?;
    Ok(())
}
