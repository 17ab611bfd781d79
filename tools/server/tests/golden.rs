//! Golden files: the `STATE` file as written by today's format, committed under
//! `fixtures/server/`: the intact one must decode to exactly the record written; the
//! damaged copies (a flipped byte, a cut file) must fail with the typed state-file error
//! naming the file. A change that cannot read yesterday's `STATE` fails here.
//! `write_fixtures` (ignored) made them; see `fixtures/README.md`.

use std::path::PathBuf;

use duplex_server::state::{load, store, OpState, StateRecord, STATE_FILE};
use duplex_server::Error;
use duplex_testkit::fixtures::{self, cut, flip_byte, replace_dir, scratch_copy};

/// The record in `state-intact/STATE`.
const RECORD: StateRecord = StateRecord {
    state: OpState::Fenced,
    epoch: 3,
    node_id: 2,
    updated_ms: 1_764_547_200_000,
};

fn fixture(name: &str) -> PathBuf {
    fixtures::dir("server").join(name)
}

#[test]
fn intact_state_file_decodes_to_the_record_written() {
    let (_t, dir) = scratch_copy(&fixture("state-intact"));
    assert_eq!(load(&dir).expect("load the fixture"), Some(RECORD));
}

/// Loading the damaged `STATE` of fixture `name` fails with the state-file error naming it.
fn assert_damaged(name: &str) {
    let (_t, dir) = scratch_copy(&fixture(name));
    match load(&dir) {
        Err(Error::StateFile { path, .. }) => assert_eq!(path, dir.join(STATE_FILE)),
        other => panic!("{name}: expected a damaged state file, got {other:?}"),
    }
}

#[test]
fn a_flipped_byte_in_the_state_file_is_refused_naming_it() {
    assert_damaged("state-flipped-byte");
}

#[test]
fn a_cut_state_file_is_refused_naming_it() {
    assert_damaged("state-cut");
}

/// Writes `fixtures/server/`: `state-intact/STATE` ([`RECORD`], through the server's own
/// `state::store`), `state-flipped-byte/STATE` (byte 17, inside the epoch, inverted) and
/// `state-cut/STATE` (its first 30 bytes). Run on purpose only: the committed bytes are
/// the truth.
#[test]
#[ignore = "regenerates the committed golden files"]
fn write_fixtures() {
    let t = duplex_testkit::temp_dir();
    let intact = t.path().join("state-intact");
    std::fs::create_dir_all(&intact).expect("mkdir");
    store(&intact, &RECORD).expect("store");
    replace_dir(&intact, &fixture("state-intact")).expect("write state-intact/");
    let flipped = fixture("state-flipped-byte");
    replace_dir(&intact, &flipped).expect("write state-flipped-byte/");
    flip_byte(&flipped.join(STATE_FILE), 17).expect("flip");
    let short = fixture("state-cut");
    replace_dir(&intact, &short).expect("write state-cut/");
    cut(&short.join(STATE_FILE), 30).expect("cut");
}
