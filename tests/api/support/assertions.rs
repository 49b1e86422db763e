//! Assertions on how a call ended.

use std::fmt::Debug;

use keygate::grpc::pb;
use tonic::{Code, Status};

/// Asserts a call failed with `code` and a message mentioning `needle`.
#[track_caller]
pub fn assert_status<T: Debug>(result: Result<T, Status>, code: Code, needle: &str) {
    let status = result.expect_err("call should have failed");
    assert_eq!(status.code(), code, "message: {}", status.message());
    assert!(
        status.message().contains(needle),
        "expected {needle:?} in {:?}",
        status.message()
    );
}

/// [`assert_status`] for one case of a table: a failure names `case`.
#[track_caller]
pub fn assert_case_status<T: Debug>(
    case: &str,
    result: Result<T, Status>,
    code: Code,
    needle: &str,
) {
    let status = match result {
        Ok(answer) => panic!("{case}: call should have failed, answered {answer:?}"),
        Err(status) => status,
    };
    assert_eq!(status.code(), code, "{case}: message: {}", status.message());
    assert!(
        status.message().contains(needle),
        "{case}: expected {needle:?} in {:?}",
        status.message()
    );
}

/// Asserts a change waited for, and reached, all `replicas`.
#[track_caller]
pub fn assert_complete(propagation: Option<pb::Propagation>, replicas: i32) {
    let propagation = propagation.unwrap();
    assert!(propagation.waited);
    assert!(propagation.complete, "{propagation:?}");
    assert_eq!(propagation.confirmed_replicas, replicas);
    assert!(propagation.unconfirmed_replicas.is_empty());
}
