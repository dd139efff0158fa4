//! The Lease elector against a real kube-apiserver (testkit's control plane): creation,
//! waiting, takeover after expiry, release, races between candidates, and a leader that loses
//! the API or the Lease.

// Test helpers outside #[test] functions fail loudly on purpose.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::time::Duration;

use pgfleet_operator::leader_election::{
    Attempt, ElectionConfig, ElectionError, LeaderElector, LostLeadership,
};
use tokio::time::Instant;

use common::{
    TcpProxy, admin_client as client, apiserver_addr, client_from, cp, fresh_namespace,
    kubeconfig_via, lease_holder,
};

const LEASE: &str = "pgfleet-operator";

fn config(namespace: &str, identity: &str, lease: Duration) -> ElectionConfig {
    ElectionConfig {
        lease_name: LEASE.into(),
        namespace: namespace.into(),
        identity: identity.into(),
        lease_duration: lease,
        renew_deadline: lease.mul_f64(2.0 / 3.0),
        retry_period: Duration::from_millis(200),
    }
}

fn namespace() -> String {
    tokio::task::block_in_place(|| fresh_namespace("pgf-le"))
}

fn holder(namespace: &str) -> Option<String> {
    tokio::task::block_in_place(|| lease_holder(namespace, LEASE))
}

fn transitions(namespace: &str) -> i64 {
    tokio::task::block_in_place(|| common::lease_transitions(namespace, LEASE))
}

async fn attempt(elector: &mut LeaderElector) -> Attempt {
    tokio::time::timeout(Duration::from_secs(10), elector.try_acquire_or_renew())
        .await
        .expect("an attempt answers within 10 s")
        .expect("the attempt reaches the API server")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_candidate_creates_the_lease_and_others_wait() {
    let client = client().await;
    let ns = namespace();
    let mut a = LeaderElector::new(client.clone(), config(&ns, "a", Duration::from_secs(15)));
    let mut b = LeaderElector::new(client.clone(), config(&ns, "b", Duration::from_secs(15)));

    assert_eq!(attempt(&mut a).await, Attempt::Held { takeover: true });
    assert_eq!(holder(&ns).as_deref(), Some("a"));
    assert_eq!(transitions(&ns), 0);
    assert_eq!(attempt(&mut b).await, Attempt::HeldBy("a".into()));
    // Renewing keeps the holder and the counter.
    assert_eq!(attempt(&mut a).await, Attempt::Held { takeover: false });
    assert_eq!(attempt(&mut b).await, Attempt::HeldBy("a".into()));
    assert_eq!(transitions(&ns), 0);
    // The standby does not release what it does not hold.
    assert!(!b.release().await.expect("release"));
    assert_eq!(holder(&ns).as_deref(), Some("a"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_takes_over_once_the_lease_went_unrenewed_for_its_duration() {
    let client = client().await;
    let ns = namespace();
    let lease = Duration::from_secs(2);
    let mut a = LeaderElector::new(client.clone(), config(&ns, "a", lease));
    let mut b = LeaderElector::new(client.clone(), config(&ns, "b", lease));
    assert_eq!(attempt(&mut a).await, Attempt::Held { takeover: true });

    // `a` stops renewing. `b` first sees the record now and must wait a full duration.
    let first_seen = Instant::now();
    let deadline = first_seen + Duration::from_secs(15);
    loop {
        match attempt(&mut b).await {
            Attempt::HeldBy(h) => assert_eq!(h, "a"),
            Attempt::Held { takeover } => {
                assert!(takeover);
                break;
            }
        }
        assert!(Instant::now() < deadline, "b did not take over within 15 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let waited = first_seen.elapsed();
    assert!(
        waited >= lease,
        "b took over after {waited:?}, before the lease duration {lease:?}"
    );
    assert_eq!(holder(&ns).as_deref(), Some("b"));
    assert_eq!(transitions(&ns), 1);

    // The old leader finds out at its next renewal.
    assert_eq!(attempt(&mut a).await, Attempt::HeldBy("b".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_hands_the_lease_over_at_once() {
    let client = client().await;
    let ns = namespace();
    let lease = Duration::from_secs(30);
    let mut a = LeaderElector::new(client.clone(), config(&ns, "a", lease));
    let mut b = LeaderElector::new(client.clone(), config(&ns, "b", lease));
    assert_eq!(attempt(&mut a).await, Attempt::Held { takeover: true });
    assert_eq!(attempt(&mut b).await, Attempt::HeldBy("a".into()));

    assert!(a.release().await.expect("release"));
    assert_eq!(holder(&ns).as_deref(), Some(""), "released: no holder");
    // No waiting for the 30 s duration.
    assert_eq!(attempt(&mut b).await, Attempt::Held { takeover: true });
    assert_eq!(holder(&ns).as_deref(), Some("b"));
    assert_eq!(transitions(&ns), 1);
    assert!(!a.release().await.expect("release"), "not a's any more");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_candidates_never_both_win() {
    let client = client().await;
    let ns = namespace();
    let lease = Duration::from_secs(30);
    let mut electors: Vec<LeaderElector> = (0..4)
        .map(|i| LeaderElector::new(client.clone(), config(&ns, &format!("c{i}"), lease)))
        .collect();
    for round in 0..3 {
        // Everyone tries at once; optimistic concurrency lets exactly one write win.
        let attempts =
            futures_util::future::join_all(electors.iter_mut().map(|e| e.try_acquire_or_renew()))
                .await;
        let winners: Vec<usize> = attempts
            .iter()
            .enumerate()
            .filter(|(_, a)| matches!(a, Ok(Attempt::Held { .. })))
            .map(|(i, _)| i)
            .collect();
        for a in &attempts {
            assert!(
                matches!(
                    a,
                    Ok(Attempt::Held { .. } | Attempt::HeldBy(_)) | Err(ElectionError::Conflict(_))
                ),
                "round {round}: unexpected {a:?}"
            );
        }
        assert_eq!(winners.len(), 1, "round {round}: {attempts:?}");
        let winner = winners[0];
        assert_eq!(holder(&ns), Some(format!("c{winner}")), "round {round}");
        // The next round races for a released Lease.
        assert!(electors[winner].release().await.expect("release"));
    }
    assert_eq!(transitions(&ns), 2, "created once, taken over twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_the_api_gives_up_within_the_renew_deadline() {
    let ns = namespace();
    let mut proxy = tokio::task::block_in_place(|| TcpProxy::start(apiserver_addr()));
    let via_proxy = tokio::task::block_in_place(|| kubeconfig_via(proxy.addr()));
    let cut_off = client_from(&via_proxy).await;
    let config = ElectionConfig {
        renew_deadline: Duration::from_secs(2),
        ..config(&ns, "a", Duration::from_secs(3))
    };
    let mut a = LeaderElector::new(cut_off, config);
    let acquired = Instant::now();
    assert_eq!(attempt(&mut a).await, Attempt::Held { takeover: true });

    let holding = tokio::spawn(async move { a.hold(acquired).await });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!holding.is_finished(), "renewals go through the proxy");
    tokio::task::block_in_place(|| proxy.cut());
    let cut_at = Instant::now();
    let lost = tokio::time::timeout(Duration::from_secs(10), holding)
        .await
        .expect("hold returns within 10 s of losing the API")
        .expect("hold task");
    assert_eq!(lost, LostLeadership::RenewDeadline(Duration::from_secs(2)));
    // Given up no later than the deadline after the last renewal, i.e. before any standby
    // could take over (lease duration 3 s), with some slack for a loaded machine.
    assert!(
        cut_at.elapsed() < Duration::from_millis(2_900),
        "gave up {:?} after the cut",
        cut_at.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_returns_when_someone_else_takes_the_lease() {
    let client = client().await;
    let ns = namespace();
    let mut a = LeaderElector::new(client.clone(), config(&ns, "a", Duration::from_secs(30)));
    let acquired = Instant::now();
    assert_eq!(attempt(&mut a).await, Attempt::Held { takeover: true });
    let holding = tokio::spawn(async move { a.hold(acquired).await });
    tokio::task::block_in_place(|| {
        cp().kubectl(&[
            "patch",
            "lease",
            LEASE,
            "-n",
            &ns,
            "--type=merge",
            "-p",
            r#"{"spec":{"holderIdentity":"intruder"}}"#,
        ])
    });
    let lost = tokio::time::timeout(Duration::from_secs(10), holding)
        .await
        .expect("hold returns within 10 s")
        .expect("hold task");
    assert_eq!(lost, LostLeadership::TakenBy("intruder".into()));
}
