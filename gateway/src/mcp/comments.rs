//! The comments a contract's author wrote above a method, message or field
//! (protox keeps them in each file's source code info), as the text of tool
//! and schema descriptions. Looked up by the element's descriptor path.

use prost_reflect::FileDescriptor;

/// The leading comment of the element at `path` in `file`, trimmed, or the
/// trailing one when there is no leading one; `None` when it has neither.
pub fn of(file: &FileDescriptor, path: &[i32]) -> Option<String> {
    let info = file.file_descriptor_proto().source_code_info.as_ref()?;
    let location = info.location.iter().find(|l| l.path == path)?;
    let text = location
        .leading_comments
        .as_deref()
        .filter(|c| !c.trim().is_empty())
        .or(location.trailing_comments.as_deref())?;
    // Comment lines are wrapped prose: one paragraph per blank-line block.
    let mut out = String::with_capacity(text.len());
    for line in text.lines().map(str::trim) {
        if line.is_empty() {
            if !out.is_empty() && !out.ends_with("\n\n") {
                out.push_str("\n\n");
            }
        } else {
            if !out.is_empty() && !out.ends_with('\n') {
                out.push(' ');
            }
            out.push_str(line);
        }
    }
    let out = out.trim_end().to_string();
    (!out.is_empty()).then_some(out)
}
