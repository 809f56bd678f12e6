//! The peer table: medians of the runs (zero-targets: the worst run), ratio node / Mosquitto.

use serde_json::{json, Value};

use super::PeerArgs;

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn values(runs: &[Value], side: &str, path: &[&str]) -> Vec<f64> {
    runs.iter()
        .map(|r| {
            let mut v = &r[side];
            for key in path {
                v = match key.parse::<usize>() {
                    Ok(i) => &v[i],
                    Err(_) => &v[*key],
                };
            }
            v.as_f64().unwrap_or(f64::NAN)
        })
        .collect()
}

fn each(v: &[f64], digits: usize) -> String {
    v.iter()
        .map(|x| format!("{x:.digits$}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn render(args: &PeerArgs, runs: &[Value]) -> String {
    let mut out = String::from(
        "| figure | Mosquitto | presence-node | ratio | each run (Mosquitto; node) |\n\
         | --- | --- | --- | --- | --- |\n",
    );
    let mut row = |figure: String, m: String, n: String, ratio: String, detail: String| {
        out.push_str(&format!("| {figure} | {m} | {n} | {ratio} | {detail} |\n"));
    };
    let kb = |v: &[f64]| v.iter().map(|b| b / 1024.0).collect::<Vec<_>>();
    let m = kb(&values(runs, "mosquitto", &["rss_per_idle_client_bytes"]));
    let n = kb(&values(runs, "node", &["rss_per_idle_client_bytes"]));
    let (mm, nm) = (median(m.clone()), median(n.clone()));
    row(
        format!(
            "RSS per idle client, own connection ({} clients, {} followed)",
            args.idle_clients, args.follow
        ),
        format!("{mm:.1} KB"),
        format!("{nm:.1} KB"),
        format!("{:.1}x", nm / mm),
        format!("{}; {}", each(&m, 1), each(&n, 1)),
    );
    if args.shared_connections > 0 {
        let s = kb(&values(
            runs,
            "node_shared",
            &["rss_per_idle_session_bytes"],
        ));
        row(
            format!(
                "RSS per idle session, {} connections ({} sessions)",
                args.shared_connections, args.idle_clients
            ),
            "n/a".into(),
            format!("{:.1} KB", median(s.clone())),
            String::new(),
            each(&s, 1),
        );
    }
    for (i, rate) in args.rates.iter().enumerate() {
        let at = |side: &str, key: &str| values(runs, side, &["phases", &i.to_string(), key]);
        let r = format!("{rate:.0} changes/s");
        let (m50, n50) = (at("mosquitto", "p50_ms"), at("node", "p50_ms"));
        let (m99, n99) = (at("mosquitto", "p99_ms"), at("node", "p99_ms"));
        let (a, b, c, d) = (
            median(m50.clone()),
            median(m99.clone()),
            median(n50.clone()),
            median(n99.clone()),
        );
        row(
            format!("{r}: p50 / p99 delivery"),
            format!("{a:.2} / {b:.2} ms"),
            format!("{c:.2} / {d:.2} ms"),
            format!("{:.1}x / {:.1}x", c / a, d / b),
            format!(
                "{} / {}; {} / {}",
                each(&m50, 2),
                each(&m99, 2),
                each(&n50, 2),
                each(&n99, 2)
            ),
        );
        let (mc, nc) = (
            at("mosquitto", "server_cpu_us_per_delivery"),
            at("node", "server_cpu_us_per_delivery"),
        );
        let (a, b) = (median(mc.clone()), median(nc.clone()));
        row(
            format!("{r}: server CPU per delivery"),
            format!("{a:.1} us"),
            format!("{b:.1} us"),
            format!("{:.1}x", b / a),
            format!("{}; {}", each(&mc, 1), each(&nc, 1)),
        );
        let (mo, no) = (
            at("mosquitto", "coalesced_pct"),
            at("node", "coalesced_pct"),
        );
        row(
            format!("{r}: updates coalesced away"),
            format!("{:.2} %", median(mo.clone())),
            format!("{:.2} %", median(no.clone())),
            String::new(),
            format!("{}; {}", each(&mo, 2), each(&no, 2)),
        );
        let worst = |side: &str| {
            ["lost", "send_errors", "client_failures"]
                .iter()
                .map(|k| at(side, k).into_iter().fold(0.0, f64::max))
                .map(|v| format!("{v:.0}"))
                .collect::<Vec<_>>()
                .join(" / ")
        };
        row(
            format!("{r}: lost / send errors / client failures (worst run)"),
            worst("mosquitto"),
            worst("node"),
            String::new(),
            String::new(),
        );
        let (ma, na) = (
            at("mosquitto", "rate_achieved_per_s"),
            at("node", "rate_achieved_per_s"),
        );
        row(
            format!("{r}: changes/s achieved by the driver"),
            format!("{:.0}", median(ma.clone())),
            format!("{:.0}", median(na.clone())),
            String::new(),
            format!("{}; {}", each(&ma, 0), each(&na, 0)),
        );
    }
    out
}

pub fn save(args: &PeerArgs, runs: &[Value], table: &str) -> Result<(), String> {
    std::fs::create_dir_all(&args.out_dir)
        .map_err(|e| format!("{}: {e}", args.out_dir.display()))?;
    let stamp = presence_node::client::format::format_rfc3339(crate::common::unix_us() / 1000)
        .replace(':', "");
    let header = format!(
        "presence-bench peer: {} users x {} followed, one TCP connection per client, \
         rates {:?}/s for {} s each, {} runs (medians; zero-targets: worst run); \
         load before the last run {}\n\n",
        args.users,
        args.follow,
        args.rates,
        args.duration_s,
        runs.len(),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let md = args.out_dir.join(format!("peer-{stamp}.md"));
    std::fs::write(&md, format!("{header}{table}")).map_err(|e| e.to_string())?;
    let js = args.out_dir.join(format!("peer-{stamp}.json"));
    let doc = json!({
        "users": args.users,
        "idle_clients": args.idle_clients,
        "follow": args.follow,
        "rates": args.rates,
        "duration_s": args.duration_s,
        "runs": runs,
    });
    std::fs::write(
        &js,
        serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    println!("saved {} and {}", md.display(), js.display());
    Ok(())
}
