//! `LoopConfig` between Python and the core: the core's defaults, offered to the
//! Python dataclass, and the one validation of a Python config.

use std::num::NonZeroUsize;
use std::time::Duration;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict};
use stepwell_core::{LoopConfig, Overflow};

/// The core's `LoopConfig` defaults, by field name; `stepwell.LoopConfig` takes
/// its defaults from here.
#[pyfunction]
pub fn loop_config_defaults(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let config = LoopConfig::default();
    let dict = PyDict::new(py);
    dict.set_item("max_response_step_depth", config.max_response_step_depth)?;
    dict.set_item("max_response_iterations", config.max_response_iterations)?;
    dict.set_item("bridge_capacity", config.bridge_capacity.get())?;
    dict.set_item("bridge_overflow", config.bridge_overflow.as_str())?;
    dict.set_item(
        "sink_drain_timeout",
        config.sink_drain_timeout.map(|d| d.as_secs_f64()),
    )?;
    dict.set_item(
        "max_concurrent_steps",
        config.max_concurrent_steps.map(NonZeroUsize::get),
    )?;
    dict.set_item("subagent_events", config.subagent_events)?;
    Ok(dict)
}

/// Checks a `stepwell.LoopConfig` (raising `ValueError`/`TypeError` naming the
/// field) and returns nothing; `LoopConfig.__post_init__` calls it.
#[pyfunction]
pub fn check_loop_config(config: &Bound<'_, PyAny>) -> PyResult<()> {
    config_from(config).map(drop)
}

/// The core's config for a `stepwell.LoopConfig`.
pub fn config_from(config: &Bound<'_, PyAny>) -> PyResult<LoopConfig> {
    let int = |name: &str| -> PyResult<Option<u64>> {
        let value = config.getattr(name)?;
        if value.is_none() {
            return Ok(None);
        }
        if value.is_instance_of::<PyBool>() {
            return Err(PyTypeError::new_err(format!(
                "LoopConfig.{name} must be an int, got a bool"
            )));
        }
        value.extract::<u64>().map(Some).map_err(|_| {
            PyValueError::new_err(format!(
                "LoopConfig.{name} must be a non-negative int, got {value}"
            ))
        })
    };
    let required = |name: &str| {
        int(name)?.ok_or_else(|| PyTypeError::new_err(format!("LoopConfig.{name} cannot be None")))
    };
    let small = |name: &str| {
        u32::try_from(required(name)?)
            .map_err(|_| PyValueError::new_err(format!("LoopConfig.{name} is too large")))
    };
    let positive = |name: &str, value: u64| {
        usize::try_from(value)
            .ok()
            .and_then(NonZeroUsize::new)
            .ok_or_else(|| PyValueError::new_err(format!("LoopConfig.{name} must be at least 1")))
    };
    let overflow = config.getattr("bridge_overflow")?;
    let bridge_overflow = overflow
        .extract::<String>()
        .ok()
        .and_then(|name| Overflow::parse(&name))
        .ok_or_else(|| {
            PyValueError::new_err(format!(
                "LoopConfig.bridge_overflow must be 'drop_newest' or 'block', got {overflow}"
            ))
        })?;
    let drain = config.getattr("sink_drain_timeout")?;
    let sink_drain_timeout = if drain.is_none() {
        None
    } else {
        let seconds = drain
            .extract::<f64>()
            .ok()
            .filter(|_| !drain.is_instance_of::<PyBool>())
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
            .ok_or_else(|| {
                PyValueError::new_err(format!(
                    "LoopConfig.sink_drain_timeout must be None or seconds >= 0, got {drain}"
                ))
            })?;
        Some(seconds)
    };
    let subagent_events = config.getattr("subagent_events")?;
    if !subagent_events.is_instance_of::<PyBool>() {
        return Err(PyTypeError::new_err(format!(
            "LoopConfig.subagent_events must be a bool, got {subagent_events}"
        )));
    }
    Ok(LoopConfig {
        max_response_step_depth: small("max_response_step_depth")?,
        max_response_iterations: small("max_response_iterations")?,
        bridge_capacity: positive("bridge_capacity", required("bridge_capacity")?)?,
        bridge_overflow,
        sink_drain_timeout,
        max_concurrent_steps: int("max_concurrent_steps")?
            .map(|n| positive("max_concurrent_steps", n))
            .transpose()?,
        subagent_events: subagent_events.is_truthy()?,
    })
}
