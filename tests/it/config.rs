//! Config loading and the table of broken configs.
