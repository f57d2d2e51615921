//! The Python face of the client core: classes, exceptions, and the waiting rules.

mod admin;
mod consumer;
mod defaults;
mod errors;
mod producer;
mod wait;

use pyo3::prelude::*;

pub fn register(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<producer::PyProducer>()?;
    module.add_class::<producer::PySendFuture>()?;
    module.add_class::<consumer::PyConsumer>()?;
    module.add_class::<consumer::PyMessage>()?;
    module.add_class::<consumer::PyMessageIterator>()?;
    module.add_class::<admin::PyAdmin>()?;
    module.add_class::<admin::PyTopicInfo>()?;
    module.add_class::<admin::PyConsumerInfo>()?;
    errors::register(module)?;
    defaults::register(module)?;
    module.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
