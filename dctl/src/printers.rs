//! How `get` prints objects: kubectl-style tables, YAML, JSON or names.

mod columns;
mod table;

use chrono::Utc;
use dctl_apis::{manifest, Resource, API_VERSION};
use serde_json::json;

pub use columns::{age, Printable};
pub use table::Table;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    #[value(skip)]
    Table,
    /// The table with more columns.
    Wide,
    Yaml,
    Json,
    /// `kind/name`, one per line.
    Name,
}

/// Renders objects in one output format; in a watch it keeps the table's column widths so
/// rows printed later line up with the header.
pub struct Printer {
    format: OutputFormat,
    with_namespace: bool,
    table: Option<Table>,
}

impl Printer {
    pub fn new(format: OutputFormat, with_namespace: bool) -> Self {
        Printer {
            format,
            with_namespace,
            table: None,
        }
    }

    /// The whole output for a list; `single` prints one object bare instead of a `List`.
    pub fn render<K: Printable>(&self, objects: &[K], single: bool) -> String {
        match self.format {
            OutputFormat::Table | OutputFormat::Wide => {
                let mut table = self.new_table::<K>();
                for object in objects {
                    table.push(self.row(object));
                }
                table.render_all()
            }
            OutputFormat::Yaml | OutputFormat::Json => {
                let value = if single && objects.len() == 1 {
                    serde_json::to_value(&objects[0]).expect("resources serialize")
                } else {
                    json!({"apiVersion": API_VERSION, "kind": "List", "items": objects})
                };
                encode(self.format, &value)
            }
            OutputFormat::Name => objects.iter().map(|o| name_line(o)).collect(),
        }
    }

    /// The first output of a watch: the header and the current objects.
    pub fn render_stream_start<K: Printable>(&mut self, objects: &[K]) -> String {
        match self.format {
            OutputFormat::Table | OutputFormat::Wide => {
                let mut table = self.new_table::<K>();
                for object in objects {
                    table.push(self.row(object));
                }
                let text = table.render_all();
                self.table = Some(table);
                text
            }
            _ => objects.iter().map(|o| self.render_stream_row(o)).collect(),
        }
    }

    /// One changed object in a watch.
    pub fn render_stream_row<K: Printable>(&mut self, object: &K) -> String {
        match self.format {
            OutputFormat::Table | OutputFormat::Wide => {
                let row = self.row(object);
                let table = self.table.get_or_insert_with(|| Table::new(Vec::new()));
                table.render_row(&row)
            }
            OutputFormat::Yaml => {
                let value = serde_json::to_value(object).expect("resources serialize");
                format!("---\n{}", encode(self.format, &value))
            }
            OutputFormat::Json => {
                let value = serde_json::to_value(object).expect("resources serialize");
                encode(self.format, &value)
            }
            OutputFormat::Name => name_line(object),
        }
    }

    fn new_table<K: Printable>(&self) -> Table {
        let mut header: Vec<String> = Vec::new();
        if self.with_namespace {
            header.push("NAMESPACE".into());
        }
        header.extend(
            K::columns(self.format == OutputFormat::Wide)
                .iter()
                .map(|c| c.to_string()),
        );
        Table::new(header)
    }

    fn row<K: Printable>(&self, object: &K) -> Vec<String> {
        let mut row = Vec::new();
        if self.with_namespace {
            row.push(object.meta().namespace().to_string());
        }
        row.extend(object.row(self.format == OutputFormat::Wide, Utc::now()));
        row
    }
}

fn encode(format: OutputFormat, value: &serde_json::Value) -> String {
    match format {
        OutputFormat::Json => {
            let mut text = serde_json::to_string_pretty(value).expect("JSON values serialize");
            text.push('\n');
            text
        }
        _ => manifest::to_yaml(value),
    }
}

fn name_line<K: Resource>(object: &K) -> String {
    format!(
        "{}/{}\n",
        K::KIND.as_str().to_ascii_lowercase(),
        object.meta().name
    )
}
