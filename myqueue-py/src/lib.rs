//! myqueue's client: a Rust core ([`client`]) and the PyO3 bindings that make it the Python
//! package `myqueue` (compiled module `myqueue._native`).

pub mod client;
mod python;

use pyo3::prelude::*;

#[pymodule]
fn _native(module: &Bound<'_, PyModule>) -> PyResult<()> {
    python::register(module)
}
