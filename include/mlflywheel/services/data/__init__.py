"""Sample data and landing-zone IO."""
