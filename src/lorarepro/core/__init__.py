"""Foundation: settings, paths, tracking, numerics and small helpers; imports nothing else of lorarepro."""
