//! A random list of operations (put, delete, batch, checkpoint, compaction, backup and
//! restore, power loss, failing fsyncs and writes, batches of a second node applied with
//! resends) against a `BTreeMap` model: see `duplex_fuzz::model` for the input layout and
//! the properties.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    duplex_fuzz::model::check_model(data);
});
