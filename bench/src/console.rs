//! `tokumei bench console`: the web console under load — N people signed in at once (default 50: researchers, a
//! chair and committee members, each with a real two-factor session of the policy service), each requesting their
//! pages in turn as fast as the console answers for a fixed time. Every page is a real one: the console asks the
//! policy service (served over TLS on loopback in this process) for what it shows, and renders it. Reports each
//! page's p50/p95/p99 latency, the throughput and the process's peak RSS. The load generator shares the machine's
//! cores with the console and the policy service, so the figures are an upper bound of what a separate client would
//! see.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;
use tokumei_console::{Console, ConsoleConfig};
use tokumei_keys::pki::PkiLayout;
use tokumei_policy::committee::Channel;
use tokumei_policy::{Actor, Origin, Policy, Role};
use zeroize::Zeroizing;

use tokumei_client::output::{emit, runtime};
use tokumei_client::reason;

const BENCH: Origin<'static> = Origin("bench");
const PASSWORD: &str = "bench password, not for production";

/// `tokumei bench console`.
#[derive(Args, Debug)]
pub struct ConsoleBench {
    /// People signed in and requesting pages at once.
    #[arg(long, default_value_t = 50)]
    pub users: usize,
    /// Seconds of load.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    pub seconds: u64,
    /// Each person's pause between pages, in milliseconds (on average; ±50 % at random so that people do not
    /// click in step). 0: every person asks again the moment a page arrives — the console at saturation.
    #[arg(long, default_value_t = 1000)]
    pub think_ms: u64,
}

/// One page's latencies.
#[derive(Debug, Serialize)]
struct PageFigures {
    requests: usize,
    p50_ms: f64,
    p95_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

/// The report.
#[derive(Debug, Serialize)]
struct Report {
    machine: String,
    users: usize,
    think_ms: u64,
    seconds: u64,
    requests: usize,
    errors: usize,
    requests_per_second: f64,
    all_pages: PageFigures,
    pages: BTreeMap<String, PageFigures>,
    peak_rss_mib: f64,
}

fn figures(mut ms: Vec<f64>) -> PageFigures {
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| {
        if ms.is_empty() {
            0.0
        } else {
            ms[((ms.len() as f64 * q).ceil() as usize).clamp(1, ms.len()) - 1]
        }
    };
    PageFigures {
        requests: ms.len(),
        p50_ms: at(0.50),
        p95_ms: at(0.95),
        p99_ms: at(0.99),
        max_ms: ms.last().copied().unwrap_or(0.0),
    }
}

/// An invited person, enrolled and signed in: (actor, policy session).
async fn person(
    policy: &Policy,
    admins: &crate::staff::Administrators,
    (username, org): (&str, &str),
    roles: &[Role],
) -> Result<(Actor, Zeroizing<String>)> {
    let code = crate::staff::invite(policy, admins, (username, username, org), roles, BENCH).await?;
    crate::staff::activate(policy, (username, PASSWORD), code.expose(), BENCH).await
}

/// People, applications and reviews: every researcher files one application, the committee reviews half of them.
async fn staff(policy: &Policy, users: usize) -> Result<Vec<(Actor, Zeroizing<String>, Vec<&'static str>)>> {
    let [first, second] = crate::staff::bootstrap(policy, BENCH).await?;
    let admins = crate::staff::Administrators {
        first: crate::staff::activate(policy, ("aoi", PASSWORD), first.expose(), BENCH)
            .await?
            .0,
        second: crate::staff::activate(policy, ("ren", PASSWORD), second.expose(), BENCH)
            .await?
            .0,
    };
    let chair = person(
        policy,
        &admins,
        ("chika", "univ-c"),
        &[Role::CommitteeChair, Role::CommitteeMember],
    )
    .await?;
    let mut members = Vec::new();
    for (name, org) in [("mei", "univ-m"), ("kenta", "hosp-k"), ("sora", "law-s")] {
        members.push(person(policy, &admins, (name, org), &[Role::CommitteeMember]).await?);
    }
    let reviewers: Vec<String> = members.iter().chain([&chair]).map(|m| m.0.username.clone()).collect();
    let mut people = Vec::new();
    anyhow::ensure!(
        users >= 5,
        "--users: at least 5 (a chair, three members and a researcher)"
    );
    for i in 0..users - 4 {
        let name = format!("r{i:03}");
        let (actor, token) = person(policy, &admins, (&name, "univ-a"), &[Role::Researcher]).await?;
        let mut form = tokumei_demo::committee::form(Channel::File);
        form.title = format!("Benchmark study {i}");
        form.recipients = [name.clone()].into_iter().collect();
        let app = policy
            .file_application(&actor, form, None, BENCH)
            .await
            .map_err(reason)?;
        if i % 2 == 0 {
            policy
                .assign(&chair.0, &app.id, &reviewers, BENCH)
                .await
                .map_err(reason)?;
        }
        people.push((
            actor,
            token,
            vec!["/", "/applications", "/applications/APP", "/registers"],
        ));
        // Each researcher's own application page.
        if let Some(last) = people.last_mut() {
            last.2[2] = Box::leak(format!("/applications/{}", app.id).into_boxed_str());
        }
    }
    for (actor, token) in members.into_iter().chain([chair]) {
        people.push((actor, token, vec!["/", "/reviews", "/applications", "/registers"]));
    }
    Ok(people)
}

/// Runs the benchmark.
pub fn run(a: ConsoleBench, json: bool) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("tokumei-bench-console-{}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    let home = dir.as_path();
    let result = runtime()?.block_on(async {
        tokumei_platform::tls::install_crypto_provider();
        let pki = PkiLayout::new(home.join("pki"));
        tokumei_keys::pki::init(&pki, &[], &["localhost".into()])?;
        std::fs::create_dir_all(home.join("policy"))?;
        let (policy, _keys) = tokumei_policy::on_home::open_service(home, None).await.map_err(reason)?;
        if !json {
            eprintln!("staffing {} people, filing their applications…", a.users);
        }
        let people = staff(&policy, a.users).await?;
        let service = crate::local_policy::start(policy.clone(), &pki).await?;
        let config = ConsoleConfig {
            policy_url: service.url.clone(),
            policy_ca: pki.ca_cert(),
            release_url: None,
            release_ca: None,
            tls: Some((pki.gateway_cert(), pki.gateway_key())),
            published: None,
            platform_key: None,
        };
        let console = Arc::new(Console::new(&config, true).map_err(|e| anyhow::anyhow!("{e}"))?);
        // Each person signed in as the sign-in page would do it: their policy session under a console cookie.
        let cookies: Vec<(String, Vec<&'static str>)> = people
            .into_iter()
            .map(|(actor, token, pages)| {
                let cookie = console.sessions.open(
                    actor.username.clone(),
                    actor.organisation.clone(),
                    actor.roles.iter().map(|r| r.as_str().to_owned()).collect(),
                    token,
                    Duration::from_secs(900),
                );
                (format!("__Host-tokumei-session={cookie}"), pages)
            })
            .collect();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let tls = tokumei_console::security::tls_config(&pki.gateway_cert(), &pki.gateway_key())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(tokumei_platform::https::serve(
            tokumei_console::router(console.clone()),
            listener,
            Some(tls),
            tokumei_platform::https::Protocols::Http1,
            async {
                let _ = stopped.await;
            },
            Duration::from_secs(1),
        ));
        let ca = std::fs::read(pki.ca_cert())?;
        let http = reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&ca)?)
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(a.users)
            .build()?;
        let base = format!("https://localhost:{}", addr.port());
        if !json {
            eprintln!("{} people requesting pages for {} s…", cookies.len(), a.seconds);
        }
        let until = Instant::now() + Duration::from_secs(a.seconds);
        let mut tasks = tokio::task::JoinSet::new();
        let think_ms = a.think_ms;
        let started = Instant::now();
        for (cookie, pages) in cookies {
            let (http, base) = (http.clone(), base.clone());
            tasks.spawn(async move {
                let mut seen: Vec<(&'static str, f64, bool)> = Vec::new();
                // People arrive over the first pause, not all in the same millisecond.
                if think_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(rand::random_range(0..think_ms))).await;
                }
                let mut i = 0;
                while Instant::now() < until {
                    let page = pages[i % pages.len()];
                    i += 1;
                    let start = Instant::now();
                    let ok = match http.get(format!("{base}{page}")).header("cookie", &cookie).send().await {
                        Ok(r) => r.status() == 200 && r.bytes().await.is_ok(),
                        Err(_) => false,
                    };
                    seen.push((page, start.elapsed().as_secs_f64() * 1000.0, ok));
                    if think_ms > 0 {
                        let pause = think_ms / 2 + rand::random_range(0..=think_ms);
                        tokio::time::sleep(Duration::from_millis(pause)).await;
                    }
                }
                seen
            });
        }
        let mut all = Vec::new();
        while let Some(done) = tasks.join_next().await {
            all.extend(done.context("a load task")?);
        }
        let _ = stop.send(());
        let _ = server.await;
        service.stop().await?;
        let elapsed = started.elapsed().as_secs_f64();
        let errors = all.iter().filter(|(_, _, ok)| !ok).count();
        // Only answered pages are timed (a refusal is fast and would flatter the figures); any error fails the run.
        all.retain(|(_, _, ok)| *ok);
        let mut by_page: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for (page, ms, _) in &all {
            let name = if page.starts_with("/applications/") { "/applications/{id}" } else { page };
            by_page.entry(name.to_owned()).or_default().push(*ms);
        }
        let report = Report {
            machine: crate::host::machine(),
            users: console.sessions.len(),
            think_ms: a.think_ms,
            seconds: a.seconds,
            requests: all.len(),
            errors,
            requests_per_second: all.len() as f64 / elapsed,
            all_pages: figures(all.iter().map(|(_, ms, _)| *ms).collect()),
            pages: by_page.into_iter().map(|(k, v)| (k, figures(v))).collect(),
            peak_rss_mib: crate::host::peak_rss_mib(None),
        };
        emit(json, &report, |r| {
            println!(
                "console: {} people, {} requests in {} s ({:.0}/s), {} errors; all pages p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms; peak RSS {:.0} MiB",
                r.users, r.requests, r.seconds, r.requests_per_second, r.errors, r.all_pages.p50_ms, r.all_pages.p95_ms, r.all_pages.p99_ms, r.peak_rss_mib
            );
            for (page, f) in &r.pages {
                println!("  {page:<22} n={:<6} p50 {:>6.1} ms  p95 {:>6.1} ms  p99 {:>6.1} ms", f.requests, f.p50_ms, f.p95_ms, f.p99_ms);
            }
        })?;
        anyhow::ensure!(report.errors == 0, "{} pages were not answered", report.errors);
        Ok(())
    });
    let _ = std::fs::remove_dir_all(&dir);
    result
}
