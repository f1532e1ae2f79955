// Runs the app, with every service of the library linked in.
ovation::main!();
