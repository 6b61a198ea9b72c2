//! `dctl node ls` and `dctl node update`: Swarm's node commands.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use dctl_apis::node::NodeAvailability;
use dctl_apis::Node;

use crate::commands::get;
use crate::connect;
use crate::daemons::parse_label;
use crate::exit::CliError;

#[derive(Subcommand)]
pub enum NodeCommand {
    /// List nodes (the same as `dctl get nodes`).
    Ls {
        /// wide | yaml | json | name
        #[arg(short = 'o', long, value_enum)]
        output: Option<crate::printers::OutputFormat>,
    },
    /// Change a node's availability or labels.
    Update(UpdateArgs),
}

#[derive(Args)]
pub struct UpdateArgs {
    /// The node to change.
    name: String,
    /// active: takes tasks; pause: keeps its tasks, takes no new ones; drain: its tasks
    /// move elsewhere.
    #[arg(long, value_parser = parse_availability)]
    availability: Option<NodeAvailability>,
    /// Add or change a label (`zone=eu`). Repeatable.
    #[arg(long = "label-add", value_parser = parse_label)]
    label_add: Vec<(String, String)>,
    /// Remove a label by key. Repeatable.
    #[arg(long = "label-rm")]
    label_rm: Vec<String>,
}

fn parse_availability(text: &str) -> Result<NodeAvailability, String> {
    serde_json::from_value(serde_json::Value::String(text.to_string()))
        .map_err(|_| format!("expected active, pause or drain, got {text:?}"))
}

pub async fn run(endpoints: &[String], command: NodeCommand) -> Result<ExitCode, CliError> {
    match command {
        NodeCommand::Ls { output } => get::run(endpoints, get::GetArgs::nodes(output)).await,
        NodeCommand::Update(args) => update(endpoints, args).await,
    }
}

async fn update(endpoints: &[String], args: UpdateArgs) -> Result<ExitCode, CliError> {
    if args.availability.is_none() && args.label_add.is_empty() && args.label_rm.is_empty() {
        return Err(CliError::usage(
            "say what to change: --availability, --label-add or --label-rm",
        ));
    }
    let store = connect::store(endpoints).await?;
    store
        .modify::<Node, _>("", &args.name, |node| {
            let before = node.spec.clone();
            if let Some(availability) = args.availability {
                node.spec.availability = availability;
            }
            for (key, value) in &args.label_add {
                node.spec.labels.insert(key.clone(), value.clone());
            }
            for key in &args.label_rm {
                node.spec.labels.remove(key);
            }
            Ok(node.spec != before)
        })
        .await?;
    println!("node/{} updated", args.name);
    Ok(ExitCode::SUCCESS)
}
