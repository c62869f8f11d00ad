"""What is measured, as pure functions: transfer counts and rates, the statistics of a table, the
flatness of the loss, and the loss-landscape figure that a cell and the report both draw."""
