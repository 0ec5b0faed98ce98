//! Rendering apart from the commands: text made from the API's answers, with no IO, so each
//! can be tested on a value.

pub(crate) mod fleet;
pub(crate) mod report;
pub(crate) mod status;
