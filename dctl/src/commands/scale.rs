//! `dctl scale service/web=5`: sets a replicated service's replica count, as
//! `docker service scale` does.

use std::process::ExitCode;

use clap::Args;
use dctl_apis::service::ServiceMode;
use dctl_apis::{Kind, Service};
use dctl_runtime::store::StoreError;
use dctl_runtime::ObjectKey;

use crate::commands::{namespace_for, parse_kind};
use crate::connect;
use crate::exit::{CliError, Exit};

#[derive(Args)]
pub struct ScaleArgs {
    /// `service/NAME=REPLICAS` (or `NAME=REPLICAS`). Several may be given.
    #[arg(required = true)]
    targets: Vec<String>,
    #[arg(short = 'n', long)]
    namespace: Option<String>,
}

/// One `NAME=N` argument.
fn parse_target(text: &str) -> Result<(String, u32), CliError> {
    let usage = || CliError::usage(format!("{text}: expected service/NAME=REPLICAS"));
    let (target, replicas) = text.split_once('=').ok_or_else(usage)?;
    let name = match target.split_once('/') {
        Some((kind, name)) => {
            if parse_kind(kind)? != Kind::Service {
                return Err(CliError::usage(format!(
                    "{text}: only services can be scaled"
                )));
            }
            name
        }
        None => target,
    };
    let replicas = replicas.parse::<u32>().map_err(|_| usage())?;
    if name.is_empty() {
        return Err(usage());
    }
    Ok((name.to_string(), replicas))
}

pub async fn run(endpoints: &[String], args: ScaleArgs) -> Result<ExitCode, CliError> {
    let targets = args
        .targets
        .iter()
        .map(|t| parse_target(t))
        .collect::<Result<Vec<_>, _>>()?;
    let namespace = namespace_for(Kind::Service, args.namespace.as_deref());
    let store = connect::store(endpoints).await?;
    for (name, replicas) in targets {
        store
            .modify::<Service, _>(&namespace, &name, |service| {
                if service.spec.mode == ServiceMode::Global {
                    return Err(StoreError::Invalid {
                        kind: Kind::Service,
                        key: ObjectKey::new(&namespace, &name),
                        message:
                            "it is global: it runs one task per eligible node and cannot be scaled"
                                .into(),
                    });
                }
                let changed = service.spec.replicas != Some(replicas);
                service.spec.replicas = Some(replicas);
                Ok(changed)
            })
            .await
            .map_err(|err| match err {
                StoreError::Invalid { .. } => CliError::new(Exit::Invalid, err.to_string()),
                other => CliError::from(other),
            })?;
        println!("service/{name} scaled to {replicas}");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_take_swarm_and_kubectl_spellings() {
        assert_eq!(parse_target("service/web=5").unwrap(), ("web".into(), 5));
        assert_eq!(parse_target("svc/web=0").unwrap(), ("web".into(), 0));
        assert_eq!(parse_target("web=3").unwrap(), ("web".into(), 3));
        assert!(parse_target("web").is_err());
        assert!(parse_target("web=-1").is_err());
        assert!(parse_target("node/a=1").is_err());
        assert!(parse_target("=2").is_err());
    }
}
