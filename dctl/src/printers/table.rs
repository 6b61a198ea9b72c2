//! Column-aligned text tables in kubectl's layout: upper-case header, three spaces apart.

/// Space between columns, as kubectl's tabwriter pads them.
const GAP: usize = 3;

/// Rows are padded to the widest cell seen so far; a watch keeps the widths of its first
/// table so later rows line up with the header.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
    widths: Vec<usize>,
}

impl Table {
    pub fn new(header: Vec<String>) -> Self {
        let widths = header.iter().map(|h| h.chars().count()).collect();
        Table {
            header,
            rows: Vec::new(),
            widths,
        }
    }

    pub fn push(&mut self, row: Vec<String>) {
        self.widen(&row);
        self.rows.push(row);
    }

    /// The header (if any) and every row pushed so far.
    pub fn render_all(&self) -> String {
        let mut out = String::new();
        if !self.header.is_empty() {
            out.push_str(&self.line(&self.header));
        }
        for row in &self.rows {
            out.push_str(&self.line(row));
        }
        out
    }

    /// One more row, padded to the widths already printed (growing them if it is wider).
    pub fn render_row(&mut self, row: &[String]) -> String {
        self.widen(row);
        self.line(row)
    }

    fn widen(&mut self, row: &[String]) {
        for (i, cell) in row.iter().enumerate() {
            let width = cell.chars().count();
            match self.widths.get_mut(i) {
                Some(w) => *w = (*w).max(width),
                None => self.widths.push(width),
            }
        }
    }

    fn line(&self, cells: &[String]) -> String {
        let mut line = String::new();
        for (i, cell) in cells.iter().enumerate() {
            line.push_str(cell);
            if i + 1 < cells.len() {
                let pad = self.widths[i] - cell.chars().count() + GAP;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        line.push('\n');
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(cells: &[&str]) -> Vec<String> {
        cells.iter().map(|c| c.to_string()).collect()
    }

    #[test]
    fn columns_line_up_three_spaces_after_the_widest_cell() {
        let mut table = Table::new(strings(&["NAME", "READY"]));
        table.push(strings(&["web", "3/3"]));
        table.push(strings(&["frontend", "0/1"]));
        assert_eq!(
            table.render_all(),
            "NAME       READY\nweb        3/3\nfrontend   0/1\n"
        );
    }

    #[test]
    fn a_later_row_keeps_the_widths_already_printed() {
        let mut table = Table::new(strings(&["NAME", "READY"]));
        table.push(strings(&["frontend", "0/1"]));
        let _ = table.render_all();
        assert_eq!(
            table.render_row(&strings(&["web", "1/1"])),
            "web        1/1\n"
        );
    }
}
