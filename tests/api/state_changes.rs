//! A disable or a revocation is followed in place by every replica that holds
//! the key: the event says all that changed, so the next request needs no
//! database read. An enable gives access back, which a notification is never
//! trusted to do (see `forged_notifications`): the key is read again. (That a
//! followed change matches the row the store writes is a store test.)

use keygate::grpc::pb::{self, Reason};
use tonic::Code;

use crate::support::{
    assert_complete, authorize_on_all, revoke_through, set_disabled_through, three_replicas,
    warm_key,
};

#[tokio::test]
async fn state_changes_are_decided_on_every_replica_without_reading_the_database() {
    let (a, b, c) = three_replicas().await;
    let all = [&a, &b, &c];
    let (revoked, revoked_token) = warm_key(&all, &["customers:read"]).await;
    let (disabled, disabled_token) = warm_key(&all, &["customers:read"]).await;
    let (reenabled, reenabled_token) = warm_key(&all, &["customers:read"]).await;

    // Through each replica in turn, so that each follows one change as its
    // origin and the others as listeners.
    let admin = &a.admin_token;
    assert_complete(Some(revoke_through(&a, admin, &revoked).await), 3);
    for (through, key, disable) in [
        (&b, &disabled, true),
        (&c, &reenabled, true),
        (&c, &reenabled, false),
    ] {
        assert_complete(
            set_disabled_through(through, admin, key, disable, true).await,
            3,
        );
    }

    // With no database to read a key from, only what each cache followed can
    // answer (a reload fails).
    for replica in all {
        replica.server_pool.close().await;
    }
    assert_eq!(
        authorize_on_all(&all, &revoked_token, "GET", "/customers").await,
        vec![Reason::Revoked; 3]
    );
    assert_eq!(
        authorize_on_all(&all, &disabled_token, "GET", "/customers").await,
        vec![Reason::Disabled; 3]
    );
    // The re-enabled key was evicted everywhere, its origin too.
    for replica in all {
        let request = pb::AuthorizeRequest {
            token: reenabled_token.clone(),
            method: "GET".into(),
            path: "/customers".into(),
            ..Default::default()
        };
        let answer = replica.authorizer_client.clone().authorize(request).await;
        assert_eq!(answer.unwrap_err().code(), Code::Unavailable);
    }
}
