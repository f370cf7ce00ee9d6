//! `check-config`: resolve the configuration and summarise what every section will do.

use std::path::Path;

use super::{Outcome, resolve};
use crate::x402;

/// `check-config`: every problem at once, or a summary of what each section will do.
pub(super) fn check_config(path: &Path) -> Outcome {
    let r = resolve(path)?;
    println!("{}: OK", path.display());
    let ib = &r.raw.inbound;
    println!(
        "  inbound: {}",
        if ib.enabled {
            format!("enabled on {} → {}", ib.listen, ib.upstream.url)
        } else {
            "disabled".into()
        }
    );
    for route in &r.routes {
        if route.offers.is_empty() {
            println!("  {} (free)", route.id());
        }
        for o in &route.offers {
            println!(
                "  {} costs {} ({} atomic units) of {} on {}, paid to {}, settled by {}",
                route.id(),
                x402::money::format_decimal(o.amount, o.decimals),
                o.amount,
                o.asset,
                o.network,
                o.pay_to,
                o.facilitator
            );
        }
    }
    println!("  store: {}", r.raw.store);
    if let Some(ob) = &r.outbound {
        println!(
            "  outbound: enabled on {}, paying from {}, {} seller(s), fallback {:?}, owners {}",
            ob.listen,
            ob.signer.address(),
            ob.sellers.len(),
            ob.fallback.mode,
            ob.owners.describe()
        );
    } else {
        println!("  outbound: disabled");
    }
    println!(
        "  facilitator: {}",
        if r.raw.facilitator.enabled {
            format!(
                "/supported /verify /settle on {} for {}",
                r.raw.facilitator.listen,
                r.facilitators
                    .iter()
                    .map(|f| f.network.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        } else {
            "disabled".into()
        }
    );
    println!(
        "  admin: {}",
        if r.raw.admin.enabled {
            format!("/metrics /healthz /readyz on {}", r.raw.admin.listen)
        } else {
            "disabled".into()
        }
    );
    println!(
        "  audit: {}",
        if r.raw.audit.enabled {
            format!(
                "{} (kept {} days)",
                r.raw.audit.dir.display(),
                r.raw.audit.retention_days
            )
        } else {
            "disabled".into()
        }
    );
    println!(
        "  otlp: {}",
        if r.raw.otlp.enabled {
            format!(
                "spans to {} as {} (sampling {})",
                crate::util::redact_url(&r.raw.otlp.endpoint),
                r.raw.otlp.service_name,
                r.raw.otlp.sample_ratio
            )
        } else {
            "off".into()
        }
    );
    Ok(())
}
