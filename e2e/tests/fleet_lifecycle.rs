//! One fleet's life, end to end: the control plane, the operator and a pooler **process**
//! started the way the fleet's Deployment describes it (same arguments and environment, tenant
//! documents through the API with the fleet's ServiceAccount), and a real PostgreSQL.
//!
//! 1. A PoolerFleet and two Tenants (`alpha`, `beta`) are applied; the operator renders the
//!    fleet's Deployment, ServiceAccount and the tenants' documents; the Tenants are Accepted
//!    but not Ready while the fleet has no pod.
//! 2. The test plays the kubelet (starts the pooler container from the Deployment, waits on its
//!    readiness probe) and the Deployment controller (writes the Deployment's status); the
//!    Tenants become Ready.
//! 3. Clients connect through the pooled port as `user.tenant`; each tenant answers from its
//!    own database.
//! 4. `defaultPoolSize` and then `mode` change on a Tenant: each is applied by the running
//!    pooler within [`RELOAD_BUDGET`] of the API write, and a client connected before keeps
//!    its connection and keeps working. Session mode with the new size is then checked by
//!    behaviour: a session keeps its server, and the pool admits exactly `poolSize` sessions.
//! 5. The password is rotated (PostgreSQL, then the Secret): new logins need the new password,
//!    the old one gets 28P01, the connected client keeps working.
//! 6. `beta` is deleted: its logins are refused with ENOTFOUND, the Tenant (finalizer released)
//!    and its document are gone, `alpha` keeps working for connected and new clients.
//! 7. SIGTERM with a transaction open: readiness fails at once, the listeners close after the
//!    drain delay, the transaction still commits, and the pooler exits 0 within the pod's
//!    `terminationGracePeriodSeconds`. The operator then stops cleanly too.
//!
//! Measured times are printed (`cargo test -p pgfleet-e2e -- --nocapture` shows them).

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::future::join_all;
use pgfleet_operator::resources::tenant_document_secret_name;

/// The fleet's name.
const FLEET: &str = "edge";
/// How long a tenant change may take from the API write to the running pooler: "within a
/// second" (the issue; DESIGN §1 says "well under a second": the operator and the pooler both
/// watch, nothing polls). The clock starts before `kubectl` is spawned, so every measured
/// figure is an upper bound that includes kubectl's own start-up.
const RELOAD_BUDGET: Duration = Duration::from_secs(1);
/// Bound for waits that are not themselves the measurement (so a slow reload fails with its
/// measured time rather than with "timed out").
const CHANGE_WAIT: Duration = Duration::from_secs(15);
/// How soon readiness must fail after SIGTERM ("at once": the next probe).
const READINESS_DROP: Duration = Duration::from_secs(1);

/// A tenant of the test: its names in Kubernetes and in PostgreSQL.
struct TenantUnderTest {
    name: &'static str,
    role: String,
    database: String,
}

impl TenantUnderTest {
    /// The login name clients use: `<role>.<external id>` (the external id defaults to the
    /// Tenant's name).
    fn login(&self) -> String {
        format!("{}.{}", self.role, self.name)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_serves_reloads_rotates_removes_and_drains() {
    let test_started = Instant::now();
    let artifacts = Artifacts::new();
    let ns = fresh_namespace();
    let mut timings: Vec<(&str, Duration)> = Vec::new();

    // PostgreSQL: a fresh role and database per tenant, so the rotation can ALTER ROLE
    // without touching anything another test uses.
    let (alpha_pw, alpha_pw_rotated, beta_pw) = ("alpha-pw-1", "alpha-pw-2", "beta-pw-1");
    let (role, database) = fresh_role_and_database("e2e_alpha", alpha_pw);
    let alpha = TenantUnderTest {
        name: "alpha",
        role,
        database,
    };
    let (role, database) = fresh_role_and_database("e2e_beta", beta_pw);
    let beta = TenantUnderTest {
        name: "beta",
        role,
        database,
    };
    blocking(|| {
        pg().psql_db(
            &alpha.database,
            &format!(
                "CREATE TABLE drained (v int); ALTER TABLE drained OWNER TO {}",
                alpha.role
            ),
        )
    });

    // ---- 1. The operator renders the fleet and the tenants ------------------------------
    let mut operator = Operator::start(&ns, &artifacts).await;
    let [session_port, pooled_port, admin_port] = free_ports::<3>();
    let pg_port = pg().port().to_string();
    apply(&manifest(
        "fleet.yaml",
        &[
            ("FLEET", FLEET),
            ("NAMESPACE", &ns),
            ("SESSION_PORT", &session_port.to_string()),
            ("POOLED_PORT", &pooled_port.to_string()),
            ("ADMIN_PORT", &admin_port.to_string()),
        ],
    ));
    for (tenant, password) in [(&alpha, alpha_pw), (&beta, beta_pw)] {
        apply(&manifest(
            "tenant.yaml",
            &[
                ("FLEET", FLEET),
                ("NAMESPACE", &ns),
                ("TENANT", tenant.name),
                ("PASSWORD", password),
                ("PG_PORT", &pg_port),
                ("DATABASE", &tenant.database),
                ("ROLE", &tenant.role),
            ],
        ));
    }

    let (deployment, _) = eventually("the fleet's Deployment", WAIT, || async {
        get_json("deployment", &ns, FLEET)
    })
    .await;
    let service_account = PodSpecView::of(&deployment).service_account;
    eventually("the fleet's ServiceAccount", WAIT, || async {
        get_json("serviceaccount", &ns, &service_account)
    })
    .await;
    for tenant in [&alpha, &beta] {
        let what = format!(
            "Tenant {} Accepted=True and Ready=False (FleetNotAvailable: no pod yet)",
            tenant.name
        );
        eventually(&what, WAIT, || async {
            let t = get_json("tenant", &ns, tenant.name)?;
            let accepted = condition(&t, "Accepted").is_some_and(|(s, _, _)| s == "True");
            let waiting = condition(&t, "Ready")
                .is_some_and(|(s, r, _)| s == "False" && r == "FleetNotAvailable");
            (accepted && waiting)
                .then_some(())
                .ok_or_else(|| conditions_text(&t))
        })
        .await;
        let document = tenant_document_secret_name(&ns, tenant.name);
        eventually(&format!("tenant document {document}"), WAIT, || async {
            get_json("secret", &ns, &document)
        })
        .await;
    }

    // ---- 2. The kubelet's part, then the controller-manager's ---------------------------
    let mut pooler = Pooler::start(&deployment, &ns, &format!("{FLEET}-e2e-0"), &artifacts);
    assert_eq!(
        (
            pooler.port("session-port"),
            pooler.port("pooled-port"),
            pooler.port("admin-port")
        ),
        (session_port, pooled_port, admin_port),
        "the Deployment's args carry the fleet's ports: {:?}",
        pooler.pod.args
    );
    assert_eq!(
        pooler.pod.arg("fleet"),
        Some(FLEET),
        "{:?}",
        pooler.pod.args
    );
    let ready_after = pooler.wait_ready().await;
    timings.push(("pooler start to readiness", ready_after));
    eventually("both tenants loaded by the pooler", CHANGE_WAIT, || async {
        let status = pooler.status().await?;
        [&alpha, &beta]
            .iter()
            .all(|t| status_tenant(&status, t.name).is_some())
            .then_some(())
            .ok_or_else(|| status.to_string())
    })
    .await;

    // No controller-manager runs, so the Deployment's status is never written; once the
    // pooler "pod" passes its readiness probe, write it as the Deployment controller would.
    let generation = deployment["metadata"]["generation"]
        .as_i64()
        .expect("generation");
    kubectl(&[
        "patch",
        "deployment",
        FLEET,
        "-n",
        &ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        &format!(
            "{{\"status\":{{\"observedGeneration\":{generation},\"replicas\":1,\
             \"readyReplicas\":1,\"availableReplicas\":1,\"updatedReplicas\":1}}}}"
        ),
    ]);
    eventually("PoolerFleet Available=True", WAIT, || async {
        let fleet = get_json("poolerfleet", &ns, FLEET)?;
        condition(&fleet, "Available")
            .is_some_and(|(s, _, _)| s == "True")
            .then_some(())
            .ok_or_else(|| conditions_text(&fleet))
    })
    .await;
    for tenant in [&alpha, &beta] {
        let what = format!("Tenant {} Ready=True (Rendered)", tenant.name);
        eventually(&what, WAIT, || async {
            let t = get_json("tenant", &ns, tenant.name)?;
            condition(&t, "Ready")
                .is_some_and(|(s, r, _)| s == "True" && r == "Rendered")
                .then_some(())
                .ok_or_else(|| conditions_text(&t))
        })
        .await;
    }

    // ---- 3. Clients through the pooled port ----------------------------------------------
    let pooled = pooler.pooled();
    let early_alpha = connect(pooled, &alpha.login(), alpha_pw, &alpha.database)
        .await
        .unwrap_or_else(|e| panic!("login {}: {:?}", alpha.login(), db_error(&e)));
    let early_beta = connect(pooled, &beta.login(), beta_pw, &beta.database)
        .await
        .unwrap_or_else(|e| panic!("login {}: {:?}", beta.login(), db_error(&e)));
    for (client, tenant) in [(&early_alpha, &alpha), (&early_beta, &beta)] {
        assert_eq!(
            row(client, "SELECT current_database(), current_user").await,
            [tenant.database.clone(), tenant.role.clone()],
            "tenant {} answers from its own database",
            tenant.name
        );
    }
    // Transaction mode with poolSize 2: more clients than servers, servers capped at 2.
    let login = alpha.login();
    let extra = join_all((0..3).map(|_| connect(pooled, &login, alpha_pw, &alpha.database))).await;
    let extra: Vec<_> = extra
        .into_iter()
        .map(|c| c.unwrap_or_else(|e| panic!("extra alpha login: {:?}", db_error(&e))))
        .collect();
    for result in join_all(extra.iter().map(|c| c.simple_query("SELECT pg_sleep(0.2)"))).await {
        result.unwrap_or_else(|e| panic!("concurrent query: {:?}", db_error(&e)));
    }
    let backends = blocking(|| pg().backend_count(&alpha.role, &alpha.database));
    assert!(
        (1..=2).contains(&backends),
        "4 transaction-mode clients of alpha (poolSize 2) use {backends} server connections"
    );
    drop(extra);
    let status = pooler.status().await.expect("/status");
    let tenant_status = status_tenant(&status, "alpha").expect("alpha in /status");
    assert_eq!(tenant_status["mode"], "transaction", "{status}");
    let pools = live_pools(&status, "alpha");
    assert!(
        pools
            .iter()
            .any(|p| p["size"] == 2 && p["mode"] == "transaction"),
        "{status}"
    );

    // ---- 4. Resize, then switch the mode, with a client connected ------------------------
    let since_patch_returned =
        timed_patch("tenant", &ns, "alpha", r#"{"spec":{"defaultPoolSize":3}}"#);
    let (_, resize_latency) = eventually("alpha's pool resized to 3", CHANGE_WAIT, || async {
        let status = pooler.status().await?;
        live_pools(&status, "alpha")
            .iter()
            .any(|p| p["size"] == 3 && p["mode"] == "transaction")
            .then_some(())
            .ok_or_else(|| status.to_string())
    })
    .await;
    let resize_latency = resize_latency + since_patch_returned;
    assert!(
        resize_latency <= RELOAD_BUDGET,
        "the pool resize reached the pooler {resize_latency:?} after the patch started \
         (budget {RELOAD_BUDGET:?})"
    );
    timings.push(("poolSize 2 -> 3 applied (from patch start)", resize_latency));
    assert_still_serves(&early_alpha, &alpha, "after the resize").await;

    let since_patch_returned =
        timed_patch("tenant", &ns, "alpha", r#"{"spec":{"mode":"session"}}"#);
    let (_, mode_latency) = eventually("alpha in session mode", CHANGE_WAIT, || async {
        let status = pooler.status().await?;
        status_tenant(&status, "alpha")
            .is_some_and(|t| t["mode"] == "session")
            .then_some(())
            .ok_or_else(|| status.to_string())
    })
    .await;
    let mode_latency = mode_latency + since_patch_returned;
    assert!(
        mode_latency <= RELOAD_BUDGET,
        "the mode change reached the pooler {mode_latency:?} after the patch started \
         (budget {RELOAD_BUDGET:?})"
    );
    timings.push((
        "mode transaction -> session applied (from patch start)",
        mode_latency,
    ));
    assert_still_serves(&early_alpha, &alpha, "after the mode change").await;

    // Session mode with poolSize 3, by behaviour: each new session keeps one server (a SET
    // survives across transactions, the backend never changes), and exactly 3 are admitted.
    let mut sessions = Vec::new();
    for i in 0..3 {
        let client = connect(pooled, &alpha.login(), alpha_pw, &alpha.database)
            .await
            .unwrap_or_else(|e| panic!("session {i}: {:?}", db_error(&e)));
        client
            .batch_execute(&format!("SET statement_timeout = '{}ms'", 4001 + i))
            .await
            .expect("SET");
        sessions.push(client);
    }
    let mut pids = Vec::new();
    for (i, client) in sessions.iter().enumerate() {
        let first = row(client, "SELECT pg_backend_pid()").await;
        let again = row(
            client,
            "SELECT pg_backend_pid(), current_setting('statement_timeout')",
        )
        .await;
        assert_eq!(
            again,
            [first[0].clone(), format!("{}ms", 4001 + i)],
            "session {i} keeps its server and its settings across transactions"
        );
        pids.push(first[0].clone());
    }
    pids.sort();
    pids.dedup();
    assert_eq!(pids.len(), 3, "3 sessions, 3 servers: {pids:?}");
    let refused = connect(pooled, &alpha.login(), alpha_pw, &alpha.database)
        .await
        .err()
        .map(|e| db_error(&e));
    let (code, message) = refused.expect("a 4th session is refused (poolSize 3, session mode)");
    assert_eq!(code, "53300", "{message}");
    assert!(
        message.contains("EMAXCONNSESSION") && message.contains("pool_size: 3"),
        "{message}"
    );
    assert_still_serves(&early_alpha, &alpha, "next to the new sessions").await;
    drop(sessions);
    eventually(
        "alpha's sessions to leave the pool",
        CHANGE_WAIT,
        || async {
            let status = pooler.status().await?;
            live_pools(&status, "alpha")
                .iter()
                .all(|p| p["clients"] == 0)
                .then_some(())
                .ok_or_else(|| status.to_string())
        },
    )
    .await;

    // ---- 5. Password rotation -------------------------------------------------------------
    let revision = |status: &serde_json::Value| {
        status_tenant(status, "alpha").map(|t| t["revision"].to_string())
    };
    let before = revision(&pooler.status().await.expect("/status"));
    blocking(|| {
        pg().psql(&format!(
            "ALTER ROLE {} PASSWORD '{alpha_pw_rotated}'",
            alpha.role
        ))
    });
    let since_patch_returned = timed_patch(
        "secret",
        &ns,
        "alpha-password",
        &format!(r#"{{"stringData":{{"password":"{alpha_pw_rotated}"}}}}"#),
    );
    let (_, rotation_latency) = eventually("alpha's new document", CHANGE_WAIT, || async {
        let status = pooler.status().await?;
        (revision(&status) != before)
            .then_some(())
            .ok_or_else(|| status.to_string())
    })
    .await;
    let rotation_latency = rotation_latency + since_patch_returned;
    assert!(
        rotation_latency <= RELOAD_BUDGET,
        "the rotated password reached the pooler {rotation_latency:?} after the patch started \
         (budget {RELOAD_BUDGET:?})"
    );
    timings.push((
        "password rotation applied (from patch start)",
        rotation_latency,
    ));
    let rotated = connect(pooled, &alpha.login(), alpha_pw_rotated, &alpha.database)
        .await
        .unwrap_or_else(|e| panic!("login with the new password: {:?}", db_error(&e)));
    assert_still_serves(&rotated, &alpha, "with the new password").await;
    let old = connect(pooled, &alpha.login(), alpha_pw, &alpha.database)
        .await
        .err()
        .map(|e| db_error(&e))
        .expect("the old password is refused");
    assert_eq!(old.0, "28P01", "{}", old.1);
    assert_still_serves(&early_alpha, &alpha, "after the rotation").await;

    // ---- 6. Deleting a tenant ------------------------------------------------------------
    let started = Instant::now();
    kubectl(&["delete", "tenant", beta.name, "-n", &ns, "--wait=false"]);
    let since_delete_returned = started.elapsed();
    let (_, removal_latency) = eventually("beta removed from the pooler", CHANGE_WAIT, || async {
        let status = pooler.status().await?;
        status_tenant(&status, beta.name)
            .is_none()
            .then_some(())
            .ok_or_else(|| status.to_string())
    })
    .await;
    let removal_latency = removal_latency + since_delete_returned;
    assert!(
        removal_latency <= RELOAD_BUDGET,
        "the deletion reached the pooler {removal_latency:?} after kubectl delete started \
         (budget {RELOAD_BUDGET:?})"
    );
    timings.push((
        "tenant deletion applied (from delete start)",
        removal_latency,
    ));
    let (code, message) = connect(pooled, &beta.login(), beta_pw, &beta.database)
        .await
        .err()
        .map(|e| db_error(&e))
        .expect("logins to a deleted tenant are refused");
    assert_eq!(code, "XX000", "{message}");
    assert_eq!(
        message,
        format!("(ENOTFOUND) tenant/user {} not found", beta.login())
    );
    eventually("Tenant beta gone (finalizer released)", WAIT, || async {
        match get_json("tenant", &ns, beta.name) {
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(e),
            Ok(t) => Err(format!("still there: {}", t["metadata"])),
        }
    })
    .await;
    let document = tenant_document_secret_name(&ns, beta.name);
    match get_json("secret", &ns, &document) {
        Err(e) if is_not_found(&e) => {}
        other => panic!("beta's document Secret {document} should be gone: {other:?}"),
    }
    assert_still_serves(&early_alpha, &alpha, "after beta's deletion").await;
    assert_still_serves(&rotated, &alpha, "after beta's deletion").await;
    // A removed tenant refuses new clients but lets the connected ones finish their work.
    assert_still_serves(
        &early_beta,
        &beta,
        "beta's connected client after its deletion",
    )
    .await;
    let fresh = connect(pooled, &alpha.login(), alpha_pw_rotated, &alpha.database)
        .await
        .unwrap_or_else(|e| panic!("new alpha login after beta's deletion: {:?}", db_error(&e)));
    assert_still_serves(&fresh, &alpha, "a new client after beta's deletion").await;
    drop((fresh, early_beta));

    // ---- 7. SIGTERM with a transaction open -------------------------------------------------
    rotated
        .batch_execute("BEGIN; INSERT INTO drained VALUES (1)")
        .await
        .expect("BEGIN; INSERT");
    pooler.process.signal("-TERM");
    let signalled = Instant::now();
    let (_, readiness_drop) = eventually(
        "the readiness probe to fail after SIGTERM",
        READINESS_DROP,
        || async {
            match pooler.probe_readiness().await? {
                (503, body) => Ok(body),
                (code, body) => Err(format!("{code} {body:?}")),
            }
        },
    )
    .await;
    timings.push(("SIGTERM to readiness 503", readiness_drop));
    let grace = pooler.pod.grace_period;
    // After --drain-delay the pooler logs that it stops accepting, then closes its listeners:
    // wait for the line (reading a file does not disturb the pooler), then for the refusal.
    let drain_line = "draining: no new connections";
    eventually(
        "the pooler to start draining (after --drain-delay)",
        grace,
        || {
            let draining = pooler.process.log_text().contains(drain_line);
            async move {
                draining
                    .then_some(())
                    .ok_or_else(|| format!("no {drain_line:?} line yet"))
            }
        },
    )
    .await;
    eventually("the pooled port to refuse connections", WAIT, || async {
        match tokio::net::TcpStream::connect(("127.0.0.1", pooled)).await {
            Err(_) => Ok(()),
            Ok(_) => Err("still accepting".to_string()),
        }
    })
    .await;
    timings.push(("SIGTERM to listeners closed", signalled.elapsed()));
    rotated
        .batch_execute("INSERT INTO drained VALUES (2); COMMIT")
        .await
        .unwrap_or_else(|e| panic!("the transaction in flight commits: {:?}", db_error(&e)));
    let remaining = grace.saturating_sub(signalled.elapsed());
    let (status, _) = pooler.process.wait_exit(remaining).await;
    let exited_after = signalled.elapsed();
    assert!(
        status.success(),
        "the pooler exited with {status} after SIGTERM"
    );
    assert!(
        exited_after < grace,
        "exited {exited_after:?} after SIGTERM, past the grace period {grace:?}"
    );
    timings.push(("SIGTERM to exit 0", exited_after));
    assert_eq!(
        blocking(|| pg().psql_db(
            &alpha.database,
            "SELECT string_agg(v::text, ',' ORDER BY v) FROM drained"
        )),
        "1,2",
        "both rows of the transaction open at SIGTERM are committed"
    );

    operator.process.signal("-TERM");
    let (status, _) = operator.process.wait_exit(WAIT).await;
    assert!(
        status.success(),
        "the operator exited with {status} after SIGTERM"
    );

    timings.push(("whole test", test_started.elapsed()));
    for (what, took) in &timings {
        eprintln!("e2e timing: {what}: {took:?}");
    }
}

/// `kubectl patch --type=merge`; returns the time kubectl took, so a latency measured from
/// its return can be counted from the moment the patch started.
fn timed_patch(kind: &str, namespace: &str, name: &str, patch: &str) -> Duration {
    let started = Instant::now();
    merge_patch(kind, namespace, name, patch);
    started.elapsed()
}

/// A client connected earlier still has its connection and still gets answers from its
/// tenant's database.
async fn assert_still_serves(
    client: &tokio_postgres::Client,
    tenant: &TenantUnderTest,
    when: &str,
) {
    assert!(
        !client.is_closed(),
        "{when}: the client's connection was closed"
    );
    let answer = client
        .simple_query("SELECT current_database()")
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{when}: a connected client's query failed: {:?}",
                db_error(&e)
            )
        });
    let database = answer.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
        _ => None,
    });
    assert_eq!(
        database.as_deref(),
        Some(tenant.database.as_str()),
        "{when}"
    );
}
